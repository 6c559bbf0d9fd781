"""A decision in the making: the status a round is writing and the actions chosen so far, with
the small vocabulary the transitions (``transitions.py``) are told in: set a condition, fail,
retry, queue, release the cluster, stop the job. Pure: it only changes its own copy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..api.reasons import Reason
from ..api.spec import ModelEvaluationSpec
from ..api.status import ConditionType, ModelEvaluationStatus, Phase
from . import status as st
from .actions import (Action, DeleteCluster, Emit, LeaveLines, ReleaseAdmission, ReleaseJobSlot,
                      StopJob)
from .builders import head_url
from .observed import Evaluation, Observed
from .settings import OperatorSettings


@dataclass
class DecisionDraft:
    """One decision in the making: the status being written and the actions so far."""

    ev: Evaluation
    spec: ModelEvaluationSpec  # or, for a failing round, an InvalidSpec (same cluster fields)
    status: ModelEvaluationStatus  # the round's own copy
    observed: Observed
    now: datetime
    settings: OperatorSettings
    actions: list[Action] = field(default_factory=list)

    # -- what the round knows
    def head(self, cluster: str | None = None) -> str | None:
        name = cluster or self.status.ray_cluster
        return head_url(name, self.ev.namespace, self.settings) if name else None

    @property
    def own_cluster(self) -> bool:
        """Whether the evaluation's cluster is its own to delete (not shared, not kept)."""
        return not self.spec.ray_cluster_name and not self.spec.keep_cluster

    def asked(self, values: dict[str, float]) -> dict[str, float]:
        """Only the metrics the spec asked for (at most 32): a document cannot grow the status."""
        wanted = {str(metric) for metric in self.spec.metric_names}
        return {name: value for name, value in values.items() if name in wanted}

    @property
    def pending_timeout(self) -> float:
        """How long the cluster may take to be ready: the spec may shorten the operator's wait,
        never lengthen it (a tenant cannot hold a slot longer than the administrator allows)."""
        asked = self.spec.pending_timeout_seconds
        return min(self.settings.pending_timeout, asked or self.settings.pending_timeout)

    def waited(self, since: datetime | None, seconds: float) -> bool:
        return bool(since and self.now - since > timedelta(seconds=seconds))

    def down_too_long(self, type_: ConditionType) -> bool:
        """Whether ``type_`` has been False longer than the head-lost timeout (a busy head may
        not answer for a while; that alone is no loss)."""
        down = st.false_for(self.status, type_, self.now)
        return down is not None and down > timedelta(seconds=self.settings.head_lost_timeout)

    # -- what the round writes
    def condition(self, type_: ConditionType, value: bool, reason: Reason, message: str) -> None:
        st.set_condition(self.status, type_, value, reason, message, self.ev.generation, self.now)

    def fail(self, reason: Reason, message: str) -> None:
        """A terminal failure: the evaluation leaves every line and lets its cluster go."""
        self.leave_lines()
        self.release_cluster()
        st.fail(self.status, reason, message, self.ev.generation, self.now)

    def release_cluster(self) -> None:
        """Deletes the RayCluster this evaluation created (never a shared or kept one) and frees
        its cluster slot (once per round)."""
        if ReleaseAdmission() in self.actions:
            return
        if self.own_cluster and self.status.ray_cluster:
            self.actions.append(DeleteCluster(self.status.ray_cluster))
        self.actions.append(ReleaseAdmission())

    def stop_job(self, why: str) -> None:
        job_id = self.status.job_id
        if job_id and self.status.ray_cluster:
            self.actions += [ReleaseJobSlot(self.head(), job_id), StopJob(job_id, why)]

    def leave_lines(self) -> None:
        if not any(isinstance(action, LeaveLines) for action in self.actions):
            self.actions.append(LeaveLines(self.head()))

    def retry(self, reason: Reason, message: str, event: str) -> None:
        """The attempt failed for a reason a retry can change: the next one after a backoff."""
        status = self.status
        delay = st.backoff_delay(status.attempt, self.settings.backoff_base,
                                 self.settings.backoff_max)
        self.actions.append(Emit(Reason.Retrying, f"{event}; attempt {status.attempt + 1} in "
                                 f"{delay:.0f}s", warning=True))
        status.next_retry_time = self.now + timedelta(seconds=delay)
        status.attempt += 1
        status.job_id = None
        status.progress = None
        status.phase = Phase.Pending
        status.reason, status.message = reason, f"retrying: {message}"

    def queued(self, type_: ConditionType, text: str) -> None:
        # Position and counts are left out on purpose: they change for every waiter whenever
        # one ends, and would rewrite every queued evaluation's status each time.
        self.status.message = text
        self.condition(type_, False, Reason.Queued, text)
