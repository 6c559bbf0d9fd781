"""What a round decides to do, as values: :func:`.decide.decide` returns them in a
:class:`Decision` with the next status, and the runtime (``runtime.py``) performs them in order.
Slots are taken and lines joined here too: looking at a slot line (observing) takes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..api.events import EventSink, MlflowRunSink, PendingEvent
from ..api.reasons import Reason
from ..api.results import ResultDocument
from ..api.status import ModelEvaluationStatus
from .builders import JobPackage


@dataclass(frozen=True)
class CreateCluster:
    """Creates the RayCluster after its NetworkPolicy (KubeRay makes its token Secret)."""

    manifest: dict[str, Any]
    message: str
    network_policy: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeleteCluster:
    """Deletes the RayCluster (its token Secret and pods go with it) and its NetworkPolicy."""

    name: str


@dataclass(frozen=True)
class ForgetCluster:
    """The RayCluster goes with its deleted evaluation (owner references): the runtime drops
    what it keeps for it (its Jobs API client)."""

    name: str


@dataclass(frozen=True)
class SubmitJob:
    """Uploads the manifest package (unless the head has it) and submits the attempt's job."""

    package: JobPackage
    request: dict[str, Any]
    attempt: int


@dataclass(frozen=True)
class StopJob:
    job_id: str
    why: str


@dataclass(frozen=True)
class RecordFailure:
    """Writes a failure document unless the attempt has one (the runner's wins)."""

    document: ResultDocument


@dataclass(frozen=True)
class StoreLogged:
    """Writes a document the runner could only print to the job's log."""

    document: ResultDocument


@dataclass(frozen=True)
class PromoteModel:
    """Sets the alias on the registered version (spec.promote), with the namespace's MLflow
    credentials; the next round reads how it went."""

    name: str
    alias: str
    version: str


@dataclass(frozen=True)
class Emit:
    reason: Reason
    message: str
    warning: bool = False


@dataclass(frozen=True)
class TakeClusterSlot:
    """Takes the cluster slot the round saw free (its namespace's share, then the operator's).
    Another evaluation may have taken it since the look: then the RayCluster this round creates
    waits for a later round."""


@dataclass(frozen=True)
class QueueForClusterSlot:
    """Waits in the line that refused a cluster slot (``namespace`` or ``operator``), in its
    turn. Refused by the operator's line, it holds its namespace's share while it waits."""

    scope: str = "operator"


@dataclass(frozen=True)
class TakeJobSlot:
    """Takes the job slot the round saw free on a Ray head, for the attempt's job. Another
    evaluation may have taken it since the look: then the submission waits for a later round."""

    head: str
    job_id: str


@dataclass(frozen=True)
class QueueForJobSlot:
    """Waits in line for a job slot on a Ray head, in its turn."""

    head: str


@dataclass(frozen=True)
class ReleaseJobSlot:
    head: str
    job_id: str


@dataclass(frozen=True)
class LeaveLines:
    """The evaluation stops waiting in every line (cluster slots, and the head's job slots)."""

    head: str | None = None


@dataclass(frozen=True)
class ReleaseAdmission:
    """Its cluster slot is free (the cluster is going, or was never its own)."""


@dataclass(frozen=True)
class SendEvents:
    """Sends events that wait in the status already written to the sinks they wait for; the
    answers are recorded after (``events.record_deliveries``). Never fails the round."""

    events: tuple[PendingEvent, ...]
    source: str  # the object's API path: the CloudEvents source
    sinks: tuple[tuple[str, EventSink | MlflowRunSink], ...]  # by the name status uses


Action = (CreateCluster | DeleteCluster | ForgetCluster | SubmitJob | StopJob | RecordFailure
          | StoreLogged | Emit | TakeClusterSlot | QueueForClusterSlot | TakeJobSlot
          | QueueForJobSlot | ReleaseJobSlot | LeaveLines | ReleaseAdmission
          | SendEvents | PromoteModel)

# The actions that a slot taken in the same round lets through.
GATED_BY_SLOT = (CreateCluster, SubmitJob)


class Decision(NamedTuple):
    """What a round decided: the next status and what to do, in order."""

    status: ModelEvaluationStatus
    actions: list[Action]
