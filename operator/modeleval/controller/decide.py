"""The controller's judgement, as pure functions: no I/O, no clock, no globals.

A reconcile is observe -> decide -> act. :func:`plan` says what this round needs to see;
the runtime (``runtime.py``) gathers it into an :class:`~.observed.Observed`, reading only;
:func:`decide` turns the spec, the current status and that observation into a
:class:`~.actions.Decision`: the next status and the actions (taking a slot among them); the
runtime performs the actions and writes the status. Every transition (``transitions.py``:
phases, retries, deadlines, suspend and resume, queueing, results-store outages, reattaching to
a job after a restart, a lost Ray head) is decided here, so each is a table-driven unit test
rather than an end-to-end one. What a deleted evaluation leaves behind is decided here too
(:func:`decide_deletion`).

Where the rest lives: what is observed in ``observed.py``, the actions in ``actions.py``, the
spec and policy check in ``policy.py``, the status being written in ``draft.py``.
"""

from __future__ import annotations

from datetime import datetime

from ..api.reasons import Reason
from ..api.results import submission_id
from ..api.spec import ModelEvaluationSpec
from ..api.status import ClusterFields, ConditionType, ModelEvaluationStatus, Phase
from . import status as st
from .actions import (Action, Decision, ForgetCluster, LeaveLines, ReleaseAdmission,
                      ReleaseJobSlot, StopJob)
from .builders import head_url
from .draft import DecisionDraft
from .events import evaluation_outbox
from .observed import Evaluation, Observed, Wants
from .policy import InvalidSpec, held_to_creation
from .settings import OperatorSettings
from .resolution import unresolved
from .transitions import run_round


def prepare(ev: Evaluation, spec: ModelEvaluationSpec, status: ModelEvaluationStatus,
            now: datetime) -> ModelEvaluationStatus:
    """The status a round starts from: the first attempt begun, a resumed evaluation on a fresh
    attempt, a retry whose time came no longer waiting. (A copy; idempotent.)"""
    start = status.model_copy(deep=True)
    if start.phase.terminal:
        return start
    if start.attempt == 0:
        start.attempt, start.start_time, start.phase, start.message = 1, now, Phase.Pending, "accepted"
    if start.cluster_fields is None:
        start.cluster_fields = ClusterFields(ray_cluster_name=spec.ray_cluster_name,
                                             keep_cluster=spec.keep_cluster)
    if not spec.suspend and start.is_true(ConditionType.Suspended):
        st.set_condition(start, ConditionType.Suspended, False, Reason.Resumed, "resumed",
                         ev.generation, now)
        start.attempt += 1  # a resumed evaluation runs a fresh attempt
        start.job_id = None
    if start.next_retry_time and now >= start.next_retry_time:
        start.next_retry_time = None
    return start


def _halted(spec: ModelEvaluationSpec, status: ModelEvaluationStatus, now: datetime) -> bool:
    """Suspended, past its deadline or waiting to retry: no new cluster, job or slot."""
    return bool(spec.suspend or st.deadline_passed(status, spec.active_deadline_seconds, now)
                or status.next_retry_time)


def plan(ev: Evaluation, spec: ModelEvaluationSpec | InvalidSpec, status: ModelEvaluationStatus,
         now: datetime) -> Wants:
    """What this round must look at; nothing more (a queued evaluation reads nothing)."""
    if status.phase.terminal:
        return Wants()
    spec = held_to_creation(spec, status)
    if isinstance(spec, InvalidSpec):  # a job it runs must be stopped: its cluster's client
        return Wants(cluster=bool(status.job_id and status.ray_cluster))
    start = prepare(ev, spec, status, now)
    if _halted(spec, start, now):
        # Stopping a job needs the cluster's Jobs API client; nothing else is read.
        return Wants(cluster=bool(start.job_id and start.ray_cluster))
    if unresolved(spec, start):  # models:/ URIs are pinned before anything is created
        return Wants(registry=True)
    own = not spec.ray_cluster_name
    if own and not start.ray_cluster:
        return Wants(admission=True)  # the next step creates the cluster: nothing to read
    provisioned = start.is_true(ConditionType.Provisioned)
    queued_for_job = start.job_id is None and bool(start.ray_cluster) and provisioned
    # A cluster of its own not (or no longer) provisioned, e.g. one kept while it was suspended,
    # passes the cluster slots again (it keeps its slot while its cluster counts in the index).
    return Wants(admission=own and not provisioned, job_slot=queued_for_job, cluster=True,
                 job=True)


def decide(ev: Evaluation, spec: ModelEvaluationSpec | InvalidSpec, status: ModelEvaluationStatus,
           observed: Observed, now: datetime, settings: OperatorSettings) -> Decision:
    """The next status and what to do, from what a round observed, with the events of its
    transition in the outbox and a send of those written before (``events.py``). Pure."""
    # The document the round read; else the one the job logged when the store was down.
    return evaluation_outbox(ev, spec, status, decide_round(ev, spec, status, observed, now, settings),
                             observed.document or observed.logged, now, settings)


def decide_round(ev: Evaluation, spec: ModelEvaluationSpec | InvalidSpec,
                 status: ModelEvaluationStatus, observed: Observed, now: datetime,
                 settings: OperatorSettings) -> Decision:
    """The round's transition (phases, conditions, cluster and job actions)."""
    if status.phase.terminal:
        return Decision(status.model_copy(deep=True), [])
    spec = held_to_creation(spec, status)
    if isinstance(spec, InvalidSpec):
        # Usually refused before anything exists; if it already has a job or cluster (its spec
        # edited, the policy tightened), they are stopped and released like any failure's.
        draft = DecisionDraft(ev, spec, status.model_copy(deep=True), observed, now, settings)
        draft.status.observed_generation = ev.generation
        draft.stop_job("its spec is no longer accepted")
        draft.fail(spec.reason, spec.message)
        return Decision(draft.status, draft.actions)
    start = prepare(ev, spec, status, now)
    start.observed_generation = ev.generation
    draft = DecisionDraft(ev, spec, start, observed, now, settings)
    run_round(draft)
    draft.status.message = st.cap(draft.status.message)
    return Decision(draft.status, draft.actions)


def deleted_job(ev: Evaluation, status: ModelEvaluationStatus) -> str | None:
    """The Ray job a deleted evaluation may have running: the one in status, or one submitted
    in the round before (its id not yet in status)."""
    submitting = status.condition(ConditionType.JobSubmitted)
    if status.job_id:
        return status.job_id
    if submitting is not None and submitting.reason == Reason.Submitting:
        return submission_id(ev.uid, status.attempt)
    return None


def decide_deletion(ev: Evaluation, spec: ModelEvaluationSpec | None,
                    status: ModelEvaluationStatus, settings: OperatorSettings) -> list[Action]:
    """What a deleted evaluation leaves behind: it leaves every line and frees its cluster
    slot; a job of a live evaluation is stopped (the RayCluster and its Secret go with the
    evaluation by owner references). ``spec`` None: it does not validate (nothing is known to
    run). Pure."""
    head = head_url(status.ray_cluster, ev.namespace, settings) if status.ray_cluster else None
    actions: list[Action] = [LeaveLines(head), ReleaseAdmission()]
    job_id = deleted_job(ev, status)
    if spec is None or status.phase.terminal or head is None or job_id is None:
        return actions
    actions += [ReleaseJobSlot(head, job_id), StopJob(job_id, "the evaluation was deleted")]
    if not spec.ray_cluster_name:
        actions.append(ForgetCluster(status.ray_cluster))
    return actions
