"""What a reconcile round sees: the evaluation's identity, the answers of the slot lines, the
RayCluster as one read of it, and the Ray job and result documents (:class:`Observed`); and
what :func:`.decide.plan` asks the runtime to look at (:class:`Wants`). Plain values: the
runtime fills them in, :func:`.decide.decide` reads them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..api.reasons import Reason
from ..api.registry import ResolvedModel
from ..api.results import ProgressDocument, ResultDocument
from ..api.status import DataDriftStatus, parse_time
from .builders import KUEUE_QUEUE_LABEL
from .rayjobs import JobInfo


@dataclass(frozen=True)
class ObjectIdentity:
    """An object's identity, from its metadata (an EvaluationSchedule's, or the part of an
    evaluation's that every object has)."""

    name: str
    namespace: str
    uid: str
    generation: int | None = None
    created: datetime | None = None


@dataclass(frozen=True)
class Evaluation(ObjectIdentity):
    """The evaluation's identity, from its metadata."""

    schedule: str | None = None  # the EvaluationSchedule that created it (its label), if any


@dataclass(frozen=True)
class Slot:
    """What a slot line (cluster slots, overall or per namespace, or a head's job slots) would
    answer now: whether a slot is free for the evaluation in its turn. Looking takes nothing:
    the slot is taken by the action :func:`.decide.decide` chooses."""

    available: bool
    limit: int = 0
    scope: str = "operator"  # whose limit refused it: operator, or namespace


@dataclass(frozen=True)
class RayClusterView:
    """What the round needs of a RayCluster, from one read of it."""

    name: str
    uid: str = ""
    ready: bool = False
    deleting: bool = False
    created: datetime | None = None
    token_secret: str | None = None  # the Secret with the Jobs API token (token auth only)
    # Why it is not ready, when something will not resolve by itself (read when not ready):
    # (Unschedulable or PodsNotReady, what Kubernetes says).
    problem: tuple[Reason, str] | None = None
    # The Kueue LocalQueue it waits in (its label), and whether it is held there: suspended,
    # its Workload not admitted (Kueue admits it by unsuspending it).
    queue: str | None = None
    held: bool = False

    @classmethod
    def of(cls, obj: dict[str, Any], pods: list[tuple[str, str, str]] = ()) -> "RayClusterView":
        """From the RayCluster and the (pod, what, message) problems of its pods."""
        meta = obj.get("metadata") or {}
        auth = (obj.get("spec") or {}).get("authOptions") or {}
        queue = (meta.get("labels") or {}).get(KUEUE_QUEUE_LABEL)
        return cls(name=meta.get("name", ""), uid=meta.get("uid", ""), ready=kuberay_ready(obj),
                   queue=queue, held=bool(queue) and (obj.get("spec") or {}).get("suspend") is True,
                   deleting=bool(meta.get("deletionTimestamp")),
                   created=parse_time(meta.get("creationTimestamp")),
                   token_secret=(auth.get("secretName") or meta.get("name"))
                   if auth.get("mode") == "token" else None,
                   problem=cluster_problem(obj, pods))


def cluster_problem(obj: dict[str, Any], pods: list[tuple[str, str, str]]
                    ) -> tuple[Reason, str] | None:
    """Why a RayCluster's pods do not come up, from its pods' problems or KubeRay's
    conditions; None when nothing stands in the way."""
    for pod, what, message in pods:
        if what == "Unschedulable":
            return Reason.Unschedulable, f"pod {pod} cannot be scheduled: {message}"
    if pods:
        pod, what, message = pods[0]
        return Reason.PodsNotReady, f"pod {pod}: {what}: {message}"
    for condition in (obj.get("status") or {}).get("conditions") or []:
        # KubeRay could not create a pod (a quota, an admission webhook, a bad field).
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            why = condition.get("message") or condition.get("reason")
            return Reason.PodsNotReady, f"KubeRay cannot create the pods: {why}"
    return None


# KubeRay's RayCluster conditions (feature gate RayClusterStatusConditions, on by default since
# v1.3): provisioned once every pod was ready, and the head ready for requests now.
KUBERAY_READY = ("RayClusterProvisioned", "HeadPodReady")


def kuberay_ready(obj: dict[str, Any]) -> bool:
    """Ready when KubeRay says all pods came up and the head is ready now. A KubeRay that
    writes no conditions (the gate turned off) is read from its deprecated ``state``."""
    status = obj.get("status") or {}
    conditions = {cond.get("type"): cond.get("status") for cond in status.get("conditions") or []}
    if not conditions:
        return status.get("state") == "ready"
    return all(conditions.get(kind) == "True" for kind in KUBERAY_READY)


@dataclass(frozen=True)
class RegistryAnswer:
    """What the MLflow registry answered for the spec's models:/ URIs not pinned yet: every one
    resolved, or why not (and whether asking again may help)."""

    resolved: tuple[ResolvedModel, ...] = ()
    problem: tuple[Reason, str] | None = None
    retryable: bool = False


@dataclass(frozen=True)
class Observed:
    """Everything a round saw. What was not looked at stays at its default."""

    admission: Slot | None = None      # looked at while the evaluation waits for a cluster of its own
    job_slot: Slot | None = None       # looked at before a submission
    cluster_read: bool = False
    cluster: RayClusterView | None = None  # after a read: None when there is no such RayCluster
    job: JobInfo | None = None          # the current attempt's Ray job
    jobs_error: str | None = None       # the Jobs API did not answer
    store: bool = False                 # a results store is configured
    document: ResultDocument | None = None
    # The document's drift as status carries it (read with the document; the measures of every
    # feature stay in MongoDB).
    drift: DataDriftStatus | None = None
    store_error: str | None = None
    logged: ResultDocument | None = None  # the attempt's document printed to the job's log
    progress: ProgressDocument | None = None
    refused: str | None = None  # the API server refused to create its RayCluster (why)
    registry: RegistryAnswer | None = None  # asked while models:/ URIs are not pinned yet
    # How the round before's PromoteModel went (done, why not, whether asking again may help:
    # the server did not answer), when this operator knows it.
    promotion: tuple[bool, str, bool] | None = None


@dataclass(frozen=True)
class Wants:
    """What :func:`.decide.plan` asks the runtime to look at this round."""

    admission: bool = False
    job_slot: bool = False  # before any read: a queued evaluation costs no API call
    cluster: bool = False
    job: bool = False
    registry: bool = False  # resolve the spec's models:/ URIs (nothing else is read then)
