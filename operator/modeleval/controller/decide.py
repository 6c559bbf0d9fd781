"""The controller's judgement, as pure functions: no I/O, no clock, no globals.

A reconcile is observe -> decide -> act. :func:`plan` says what this round needs to see;
the runtime (``runtime.py``) gathers it into an :class:`Observed`; :func:`decide` turns the
spec, the current status and that observation into the next status and a list of
:class:`Action` values; the runtime performs the actions and writes the status. Every
transition (phases, retries, deadlines, suspend and resume, queueing, results-store outages,
reattaching to a job after a restart, a lost Ray head) is here, so each is a table-driven unit
test rather than an end-to-end one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from ..api.reasons import Reason
from ..api.results import ProgressDocument, ResultDocument, submission_id
from ..api.spec import (ModelEvaluationSpec, ModelFormat, ModelSource, Resources,
                        format_validation_error, parse_quantity)
from ..api.status import (BaselineStatus, ClusterFields, ConditionType, ModelEvaluationStatus,
                          Phase, ResultsRef, capped_warnings)
from . import status as st
from .builders import (JobPackage, build_job_submission, build_network_policy, build_raycluster,
                       cluster_name, head_url, job_package)
from .rayjobs import JobInfo
from .settings import OperatorSettings, describe_toleration

# ----------------------------------------------------------------------------- what is observed


@dataclass(frozen=True)
class Evaluation:
    """The evaluation's identity, from its metadata."""

    name: str
    namespace: str
    uid: str
    generation: int | None = None
    created: datetime | None = None
    schedule: str | None = None  # the EvaluationSchedule that created it (its label), if any


@dataclass(frozen=True)
class InvalidSpec:
    """A spec that does not validate, or that the operator's policy refuses; the message names
    the field."""

    message: str
    reason: Reason = Reason.InvalidSpec
    # What is known of the cluster it may already hold (a spec edited, or a policy tightened,
    # after its cluster was made): whether that cluster is its own to delete.
    ray_cluster_name: str | None = None
    keep_cluster: bool = False
    pending_timeout_seconds: int | None = None


def parse_spec(raw: dict[str, Any], settings: OperatorSettings) -> ModelEvaluationSpec | InvalidSpec:
    try:
        spec = ModelEvaluationSpec.model_validate(raw)
    except ValidationError as error:
        shared, keep = raw.get("rayClusterName"), raw.get("keepCluster")
        return InvalidSpec(format_validation_error(error, "spec"),
                           ray_cluster_name=shared if isinstance(shared, str) and shared else None,
                           keep_cluster=keep is True)
    for where, model in spec.named_models():
        refused = model_refusal(where, model, settings)
        if refused:
            return InvalidSpec(refused[1], refused[0], spec.ray_cluster_name, spec.keep_cluster)
    for where, uri in spec.named_uris():
        if settings.refuse_file_uris and uri.startswith("file://"):
            return InvalidSpec(_FILE_REFUSED.format(where=where),
                               ray_cluster_name=spec.ray_cluster_name, keep_cluster=spec.keep_cluster)
    refused = policy_violation(spec, settings)
    if refused:
        return InvalidSpec(refused, Reason.Forbidden, spec.ray_cluster_name, spec.keep_cluster)
    return spec


_FILE_REFUSED = ("{where}: file:// URIs are refused in a cluster (pods cannot read the "
                 "submitter's files); use s3://")


def model_refusal(where: str, model: ModelSource,
                  settings: OperatorSettings) -> tuple[Reason, str] | None:
    """The one check of a model against the platform, for every model a spec names (the
    model, the baseline's, each challenger's; a schedule's champion and new models): why it is
    refused, or None. What holds everywhere (the URI's shape, no '..', a known format, pickle
    only with allowPickle) is ModelSource's own validation; this adds what the cluster rules:
    no file://, no pickle unless the platform allows it."""
    if settings.refuse_file_uris and model.uri.startswith("file://"):
        return Reason.InvalidSpec, _FILE_REFUSED.format(where=f"{where}.uri")
    if model.format == ModelFormat.pickle and not settings.allow_pickle:
        return Reason.Forbidden, (f"{where}.format: pickle models run code when loaded and this "
                                  "operator's policy refuses them (allowPickle: false); export "
                                  "to XGBoost JSON/UBJSON or ONNX")
    return None


def held_to_creation(spec: ModelEvaluationSpec | InvalidSpec, status: ModelEvaluationStatus
                     ) -> ModelEvaluationSpec | InvalidSpec:
    """The spec, or an InvalidSpec when its rayClusterName or keepCluster differ from what the
    evaluation was first seen with (the CRD refuses such an edit; this holds even where the
    CRD's rule is missing). Whose cluster is deleted must not follow a later edit."""
    fixed = status.cluster_fields
    if fixed is None:
        return spec
    if isinstance(spec, InvalidSpec):
        return replace(spec, ray_cluster_name=fixed.ray_cluster_name,
                       keep_cluster=fixed.keep_cluster)
    for name, now, then in (("rayClusterName", spec.ray_cluster_name, fixed.ray_cluster_name),
                            ("keepCluster", spec.keep_cluster, fixed.keep_cluster)):
        if now != then:
            return InvalidSpec(f"spec.{name}: cannot change after creation (was {then!r}, now "
                               f"{now!r})", ray_cluster_name=fixed.ray_cluster_name,
                               keep_cluster=fixed.keep_cluster)
    return spec


def _image_allowed(image: str, allowed: list[str]) -> bool:
    return any(image == a or (a.endswith("*") and image.startswith(a[:-1])) for a in allowed)


def policy_violation(spec: ModelEvaluationSpec, settings: OperatorSettings) -> str | None:
    """What the spec asks for beyond the operator's policy (the chart's ``policy`` values), or
    None. Tenants may create evaluations; only the platform decides what they may run."""
    images = settings.allowed_ray_images or [settings.ray_image]
    if spec.ray_image and not _image_allowed(spec.ray_image, images):
        return (f"spec.rayImage: {spec.ray_image} is not an allowed Ray image (operator policy "
                f"allowedRayImages: {', '.join(images)})")
    return _resources_violation(spec.resources, settings) or _placement_violation(spec, settings)


def _resources_violation(r: Resources, settings: OperatorSettings) -> str | None:
    if settings.max_workers and r.workers > settings.max_workers:
        return (f"spec.resources.workers: {r.workers} is above the operator's limit "
                f"(maxWorkers: {settings.max_workers})")
    if settings.max_gpus and r.workers * r.gpu > settings.max_gpus:
        return (f"spec.resources.gpu: {r.workers} worker(s) x {r.gpu} GPU(s) is above the "
                f"operator's limit (maxGpus: {settings.max_gpus} per evaluation)")
    for setting, limit, asked in (
            ("maxWorkerMemory", settings.max_worker_memory,
             (("spec.resources.memory", r.memory), ("spec.resources.headMemory", r.head_memory))),
            ("maxWorkerCpu", settings.max_worker_cpu,
             (("spec.resources.cpu", r.cpu), ("spec.resources.headCpu", r.head_cpu)))):
        for name, value in asked if limit else ():
            if parse_quantity(value) > parse_quantity(limit):
                return f"{name}: {value} is above the operator's limit ({setting}: {limit})"
    return None


def _placement_violation(spec: ModelEvaluationSpec, settings: OperatorSettings) -> str | None:
    """Tolerations and node labels let pods onto nodes their taints keep for others (GPU,
    dedicated, system nodes): only those the platform lists are accepted."""
    for index, toleration in enumerate(spec.tolerations):
        if not any(allowed.admits(toleration) for allowed in settings.allowed_tolerations):
            listed = "; ".join(map(describe_toleration, settings.allowed_tolerations)) or "none"
            return (f"spec.tolerations[{index}]: {describe_toleration(toleration)} is not allowed by the "
                    f"operator's policy (allowedTolerations: {listed})")
    for key, value in spec.node_selector.items():
        values = settings.allowed_node_selectors.get(key)
        if values is None or ("*" not in values and value not in values):
            listed = ", ".join(f"{k}={'|'.join(v)}" for k, v in
                               sorted(settings.allowed_node_selectors.items())) or "none"
            return (f"spec.nodeSelector.{key}: {key}={value} is not allowed by the operator's "
                    f"policy (allowedNodeSelectors: {listed})")
    return None


@dataclass(frozen=True)
class Slot:
    """The answer of a slot line (cluster slots, overall or per namespace, or a head's job
    slots)."""

    granted: bool
    limit: int = 0
    scope: str = "operator"  # whose limit refused it: operator, or namespace


@dataclass(frozen=True)
class ClusterView:
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

    @classmethod
    def of(cls, obj: dict[str, Any], pods: list[tuple[str, str, str]] = ()) -> "ClusterView":
        """From the RayCluster and the (pod, what, message) problems of its pods."""
        meta = obj.get("metadata") or {}
        auth = (obj.get("spec") or {}).get("authOptions") or {}
        created = meta.get("creationTimestamp")
        return cls(name=meta.get("name", ""), uid=meta.get("uid", ""), ready=kuberay_ready(obj),
                   deleting=bool(meta.get("deletionTimestamp")),
                   created=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
                   token_secret=(auth.get("secretName") or meta.get("name"))
                   if auth.get("mode") == "token" else None,
                   problem=_problem(obj, pods))


def _problem(obj: dict[str, Any], pods: list[tuple[str, str, str]]) -> tuple[Reason, str] | None:
    for pod, what, message in pods:
        if what == "Unschedulable":
            return Reason.Unschedulable, f"pod {pod} cannot be scheduled: {message}"
    if pods:
        pod, what, message = pods[0]
        return Reason.PodsNotReady, f"pod {pod}: {what}: {message}"
    for c in (obj.get("status") or {}).get("conditions") or []:
        # KubeRay could not create a pod (a quota, an admission webhook, a bad field).
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            return Reason.PodsNotReady, f"KubeRay cannot create the pods: {c.get('message') or c.get('reason')}"
    return None


# KubeRay's RayCluster conditions (feature gate RayClusterStatusConditions, on by default since
# v1.3): provisioned once every pod was ready, and the head ready for requests now.
KUBERAY_READY = ("RayClusterProvisioned", "HeadPodReady")


def kuberay_ready(obj: dict[str, Any]) -> bool:
    """Ready when KubeRay says all pods came up and the head is ready now. A KubeRay that
    writes no conditions (the gate turned off) is read from its deprecated ``state``."""
    status = obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if not conditions:
        return status.get("state") == "ready"
    return all(conditions.get(t) == "True" for t in KUBERAY_READY)


@dataclass(frozen=True)
class Observed:
    """Everything a round saw. What was not looked at stays at its default."""

    admission: Slot | None = None      # asked while the evaluation waits for a cluster of its own
    job_slot: Slot | None = None       # asked before a submission
    cluster_read: bool = False
    cluster: ClusterView | None = None  # after a read: None when there is no such RayCluster
    job: JobInfo | None = None          # the current attempt's Ray job
    jobs_error: str | None = None       # the Jobs API did not answer
    store: bool = False                 # a results store is configured
    document: ResultDocument | None = None
    store_error: str | None = None
    logged: ResultDocument | None = None  # the attempt's document printed to the job's log
    progress: ProgressDocument | None = None
    refused: str | None = None  # the API server refused to create its RayCluster (why)


@dataclass(frozen=True)
class Wants:
    """What :func:`plan` asks the runtime to look at this round."""

    admission: bool = False
    job_slot: bool = False  # before any read: a queued evaluation costs no API call
    cluster: bool = False
    job: bool = False


# ----------------------------------------------------------------------------- what is done


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
class Emit:
    reason: Reason
    message: str
    warning: bool = False


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


Action = (CreateCluster | DeleteCluster | SubmitJob | StopJob | RecordFailure | StoreLogged | Emit
          | ReleaseJobSlot | LeaveLines | ReleaseAdmission)


# ----------------------------------------------------------------------------- the rules


def prepare(ev: Evaluation, spec: ModelEvaluationSpec, status: ModelEvaluationStatus,
            now: datetime) -> ModelEvaluationStatus:
    """The status a round starts from: the first attempt begun, a resumed evaluation on a fresh
    attempt, a retry whose time came no longer waiting. (A copy; idempotent.)"""
    s = status.model_copy(deep=True)
    if s.phase.terminal:
        return s
    if s.attempt == 0:
        s.attempt, s.start_time, s.phase, s.message = 1, now, Phase.Pending, "accepted"
    if s.cluster_fields is None:
        s.cluster_fields = ClusterFields(ray_cluster_name=spec.ray_cluster_name,
                                         keep_cluster=spec.keep_cluster)
    if not spec.suspend and s.is_true(ConditionType.Suspended):
        st.set_condition(s, ConditionType.Suspended, False, Reason.Resumed, "resumed",
                         ev.generation, now)
        s.attempt += 1  # a resumed evaluation runs a fresh attempt
        s.job_id = None
    if s.next_retry_time and now >= s.next_retry_time:
        s.next_retry_time = None
    return s


def _halted(spec: ModelEvaluationSpec, s: ModelEvaluationStatus, now: datetime) -> bool:
    """Suspended, past its deadline or waiting to retry: no new cluster, job or slot."""
    return bool(spec.suspend or st.deadline_passed(s, spec.active_deadline_seconds, now)
                or s.next_retry_time)


def plan(ev: Evaluation, spec: ModelEvaluationSpec | InvalidSpec, status: ModelEvaluationStatus,
         now: datetime) -> Wants:
    """What this round must look at; nothing more (a queued evaluation reads nothing)."""
    if status.phase.terminal:
        return Wants()
    spec = held_to_creation(spec, status)
    if isinstance(spec, InvalidSpec):  # a job it runs must be stopped: its cluster's client
        return Wants(cluster=bool(status.job_id and status.ray_cluster))
    s = prepare(ev, spec, status, now)
    if _halted(spec, s, now):
        # Stopping a job needs the cluster's Jobs API client; nothing else is read.
        return Wants(cluster=bool(s.job_id and s.ray_cluster))
    own = not spec.ray_cluster_name
    if own and not s.ray_cluster:
        return Wants(admission=True)  # the next step creates the cluster: nothing to read
    queued_for_job = s.job_id is None and bool(s.ray_cluster) and s.is_true(ConditionType.Provisioned)
    # A cluster of its own not (or no longer) provisioned, e.g. one kept while it was suspended,
    # passes the cluster slots again (it keeps its slot while its cluster counts in the index).
    return Wants(admission=own and not s.is_true(ConditionType.Provisioned),
                 job_slot=queued_for_job, cluster=True, job=True)


@dataclass
class _Round:
    """One decision in the making: the status being written and the actions so far."""

    ev: Evaluation
    spec: ModelEvaluationSpec  # or, for a failing round, an InvalidSpec (same cluster fields)
    s: ModelEvaluationStatus
    o: Observed
    now: datetime
    settings: OperatorSettings
    actions: list[Action] = field(default_factory=list)

    # -- small vocabulary
    def condition(self, type_: ConditionType, value: bool, reason: Reason, message: str) -> None:
        st.set_condition(self.s, type_, value, reason, message, self.ev.generation, self.now)

    def fail(self, reason: Reason, message: str) -> None:
        """A terminal failure: the evaluation leaves every line and lets its cluster go."""
        self.leave_lines()
        self.release_cluster()
        st.fail(self.s, reason, message, self.ev.generation, self.now)

    def head(self, cluster: str | None = None) -> str | None:
        name = cluster or self.s.ray_cluster
        return head_url(name, self.ev.namespace, self.settings) if name else None

    @property
    def own_cluster(self) -> bool:
        """Whether the evaluation's cluster is its own to delete (not shared, not kept)."""
        return not self.spec.ray_cluster_name and not self.spec.keep_cluster

    def asked(self, values: dict[str, float]) -> dict[str, float]:
        """Only the metrics the spec asked for (at most 32): a document cannot grow the status."""
        wanted = {str(m) for m in self.spec.metric_names}
        return {k: v for k, v in values.items() if k in wanted}

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
        down = st.false_for(self.s, type_, self.now)
        return down is not None and down > timedelta(seconds=self.settings.head_lost_timeout)

    # -- steps that end a round
    def release_cluster(self) -> None:
        """Deletes the RayCluster this evaluation created (never a shared or kept one) and frees
        its cluster slot (once per round)."""
        if ReleaseAdmission() in self.actions:
            return
        if self.own_cluster and self.s.ray_cluster:
            self.actions.append(DeleteCluster(self.s.ray_cluster))
        self.actions.append(ReleaseAdmission())

    def stop_job(self, why: str) -> None:
        if self.s.job_id and self.s.ray_cluster:
            self.actions += [ReleaseJobSlot(self.head(), self.s.job_id), StopJob(self.s.job_id, why)]

    def leave_lines(self) -> None:
        if not any(isinstance(a, LeaveLines) for a in self.actions):
            self.actions.append(LeaveLines(self.head()))

    def retry(self, reason: Reason, message: str, event: str) -> None:
        """The attempt failed for a reason a retry can change: the next one after a backoff."""
        delay = st.backoff_delay(self.s.attempt, self.settings.backoff_base, self.settings.backoff_max)
        self.actions.append(Emit(Reason.Retrying, f"{event}; attempt {self.s.attempt + 1} in "
                                 f"{delay:.0f}s", warning=True))
        self.s.next_retry_time = self.now + timedelta(seconds=delay)
        self.s.attempt += 1
        self.s.job_id = None
        self.s.progress = None
        self.s.phase = Phase.Pending
        self.s.reason, self.s.message = reason, f"retrying: {message}"

    def queued(self, type_: ConditionType, text: str) -> None:
        # Position and counts are left out on purpose: they change for every waiter whenever
        # one ends, and would rewrite every queued evaluation's status each time.
        self.s.message = text
        self.condition(type_, False, Reason.Queued, text)

    # -- the story of a round
    def run(self) -> None:
        spec, s = self.spec, self.s
        if spec.suspend:
            return self.suspend()
        if st.deadline_passed(s, spec.active_deadline_seconds, self.now):
            self.stop_job("activeDeadlineSeconds exceeded")
            return self.fail(Reason.DeadlineExceeded, "the evaluation ran longer than "
                             f"activeDeadlineSeconds={spec.active_deadline_seconds}")
        if s.next_retry_time:
            return None
        o = self.o
        if o.refused is not None:  # a 4xx other than a conflict: a retry would be refused too
            return self.fail(Reason.CreateRefused, o.refused)
        if o.job_slot is not None and not o.job_slot.granted:
            return self.queued(ConditionType.JobSubmitted, self._job_queue_text())
        if o.admission is not None and not o.admission.granted:
            if o.admission.scope == "namespace":
                return self.queued(ConditionType.Provisioned, f"waiting for one of namespace "
                                   f"{self.ev.namespace}'s {o.admission.limit} cluster slots "
                                   "(policy.maxActivePerNamespace; oldest first)")
            return self.queued(ConditionType.Provisioned, f"waiting for one of the operator's "
                               f"{o.admission.limit} cluster slots (operator.maxActiveEvaluations;"
                               " namespaces holding fewer first, then oldest)")
        if self.cluster_ready():
            self.job()
        return None

    def _job_queue_text(self) -> str:
        limit = self.o.job_slot.limit if self.o.job_slot else 0
        return (f"waiting for one of the {limit} job slots on RayCluster {self.s.ray_cluster} "
                "(oldest first)")

    def suspend(self) -> None:
        s = self.s
        self.stop_job("the evaluation was suspended")
        s.job_id = None
        self.leave_lines()
        self.release_cluster()
        if self.own_cluster:
            s.ray_cluster = None  # deleted: a resumed evaluation asks for a cluster again
        if s.ray_cluster and not self.spec.ray_cluster_name:  # kept: admitted again on resume
            self.condition(ConditionType.Provisioned, False, Reason.Suspended,
                           f"RayCluster {s.ray_cluster} is kept (keepCluster) while suspended")
        s.phase, s.progress, s.message = Phase.Pending, None, "suspended"
        self.condition(ConditionType.Suspended, True, Reason.Suspended,
                       "spec.suspend is true: the Ray job is stopped and the cluster released")

    def cluster_ready(self) -> bool:
        """Creates or waits for the RayCluster; True once it is ready for the job."""
        spec, s, o = self.spec, self.s, self.o
        name = spec.ray_cluster_name or s.ray_cluster or cluster_name(self.ev.name, s.attempt)
        if not o.cluster_read or (o.cluster is None and not spec.ray_cluster_name):
            # Never created (or gone): create it. A round before a restart may have created it
            # already; the create then finds it, and the next round reads it.
            self.create_cluster(name)
            return False
        c = o.cluster
        if c is None:
            text = f"spec.rayClusterName: RayCluster {name} does not exist"
            self.condition(ConditionType.Provisioned, False, Reason.RayClusterNotFound, text)
            if self.waited(s.start_time, self.pending_timeout):
                self.fail(Reason.RayClusterNotFound, text)
            return False
        if c.deleting:
            # The previous attempt's cluster (same name) is still going: the fresh one after it.
            self.condition(ConditionType.Provisioned, False, Reason.Replacing,
                           f"waiting for the previous RayCluster {name} to be deleted")
            return False
        s.ray_cluster = name
        if c.ready:
            self.condition(ConditionType.Provisioned, True, Reason.RayClusterReady,
                           f"RayCluster {name} is ready")
            return True
        if s.job_id and self.down_too_long(ConditionType.Provisioned):
            self.lost(f"RayCluster {name} stopped being ready while Ray job {s.job_id} ran")
            return False
        if s.phase == Phase.Pending:
            s.phase = Phase.Provisioning
        # Before its job starts, every not-ready state ends within pendingTimeout of this
        # cluster's creation (a retry's fresh cluster gets the full wait; a shared cluster counts
        # from the evaluation's start), with what Kubernetes reports.
        reason, text = c.problem or (Reason.Provisioning, f"waiting for RayCluster {name} to be ready")
        self.condition(ConditionType.Provisioned, False, reason, text)
        since = max((t for t in (c.created, s.start_time) if t), default=None)
        if not s.job_id and self.waited(since, self.pending_timeout):
            if c.problem is None:
                reason, text = Reason.PodsNotReady, (f"RayCluster {name} was not ready "
                                                     f"{self.pending_timeout:.0f}s after "
                                                     "it was created")
            self.fail(reason, text)
        return False

    def create_cluster(self, name: str) -> None:
        ev, spec, s = self.ev, self.spec, self.s
        r = spec.resources
        self.actions.append(CreateCluster(
            build_raycluster(ev.name, ev.namespace, ev.uid, spec, self.settings, cluster=name),
            f"RayCluster {name} created with {r.workers} worker(s) of cpu={r.cpu} "
            f"memory={r.memory} gpu={r.gpu}",
            build_network_policy(name, ev.name, ev.namespace, ev.uid, self.settings)))
        s.ray_cluster = name
        s.phase = Phase.Provisioning
        s.message = f"created RayCluster {name}"
        self.condition(ConditionType.Provisioned, False, Reason.Creating, f"RayCluster {name} created")

    def job(self) -> None:
        ev, s, o = self.ev, self.s, self.o
        sid = submission_id(ev.uid, s.attempt)
        name = s.ray_cluster
        if o.jobs_error is not None:
            self.condition(ConditionType.JobSubmitted, False, Reason.RayUnavailable, o.jobs_error)
            if s.job_id == sid and self.down_too_long(ConditionType.JobSubmitted):
                self.lost(f"the Ray head of RayCluster {name} did not answer for "
                          f"{self.settings.head_lost_timeout:.0f}s while job {sid} ran: {o.jobs_error}")
            return
        job = o.job
        if job is None and s.job_id == sid:
            # The head accepted this job and no longer knows it: the head pod was replaced (Ray
            # keeps its job table in the head's memory). Never resubmitted onto it; the result
            # document says whether the job ended before its head went.
            job = _ended_before_head_lost(o.document, sid)
            if job is None:
                return self.lost(f"the Ray head of RayCluster {name} lost job {sid} (its pod was "
                                 "replaced)")
        if job is None:
            if o.job_slot is None or not o.job_slot.granted:
                return self.queued(ConditionType.JobSubmitted, self._job_queue_text())
            package = job_package(ev.name, ev.namespace, ev.uid, self.spec, ev.schedule)
            self.actions.append(SubmitJob(package, build_job_submission(
                ev.name, ev.namespace, ev.uid, s.attempt, package, self.settings.allow_pickle,
                self.settings.reports),
                s.attempt))
            s.message = f"submitting Ray job {sid}"
            return self.condition(ConditionType.JobSubmitted, False, Reason.Submitting,
                                  f"submitting Ray job {sid} (attempt {s.attempt})")
        # Found: submitted by an earlier round, or before a restart (its id not yet in status).
        s.job_id = sid
        s.dashboard_url = self.head()
        s.phase = Phase.Running
        s.message = f"Ray job {sid}: {job.status}"
        self.condition(ConditionType.JobSubmitted, True, JOB_REASONS.get(job.status, Reason.JobRunning),
                       f"Ray job {sid} is {job.status}")
        if not job.finished:
            if o.progress is not None:
                s.progress = st.progress(o.progress.done, o.progress.total, o.progress.unit)
            return None
        self.actions.append(ReleaseJobSlot(self.head(), sid))
        return self.finish(job)

    def finish(self, job: JobInfo) -> None:
        spec, s, o = self.spec, self.s, self.o
        document = o.document
        if document is None and o.store and o.logged is not None and o.store_error is None:
            # The runner printed the document it could not store: store it; the next round
            # reads it back from MongoDB.
            self.actions.append(StoreLogged(o.logged))
            return self.condition(ConditionType.Complete, False, Reason.ResultsStoreUnavailable,
                                  f"Ray job {job.submission_id} {job.status.lower()}; its result "
                                  "is being written to MongoDB from the job's log")
        if document is None and o.store_error is not None:
            kept = " Its result is kept in the job's log and is written when MongoDB answers." \
                if o.logged else ""
            self.condition(ConditionType.Complete, False, Reason.ResultsStoreUnavailable,
                           f"Ray job {job.submission_id} {job.status.lower()}; MongoDB: "
                           f"{o.store_error}.{kept}")
            if self.waited(job.ended, self.settings.results_store_timeout):
                if o.logged and o.logged.metrics:
                    s.metrics = self.asked(o.logged.metrics)
                self.fail(Reason.ResultsStoreUnavailable, "MongoDB did not answer for "
                          f"{self.settings.results_store_timeout:.0f}s after the job ended: "
                          f"{o.store_error}" + ("; the metrics are in status" if o.logged else ""))
            return None
        if job.status == "SUCCEEDED" and document is not None and document.succeeded:
            return self.succeed(document)
        if job.status == "SUCCEEDED" and document is None:
            # The runner keeps a result it could not store and writes it once the store is back.
            self.condition(ConditionType.Complete, False, Reason.ResultsStoreUnavailable,
                           "the Ray job finished; its result document is not in MongoDB yet")
            if self.waited(job.ended, self.settings.pending_timeout):
                self.fail(Reason.ResultsStoreUnavailable,
                          "the Ray job succeeded but its result never reached MongoDB")
            return None
        if job.status == "STOPPED":
            return self.fail(Reason.Cancelled, f"Ray job {job.submission_id} was stopped")
        reason = (document.reason if document else None) or Reason.JobFailed
        message = (document.message if document else None) or \
            f"Ray job {job.submission_id} failed: {job.message}"
        retryable = document.retryable if document and document.retryable is not None \
            else document is None
        if retryable and s.attempt <= spec.backoff_limit:
            return self.retry(reason, message, f"attempt {s.attempt} failed ({reason}: {message})")
        if not retryable:
            message = f"{message} (not retried: {reason} does not change on a retry)"
        return self.fail(reason, message)

    def succeed(self, document: ResultDocument) -> None:
        spec, s = self.spec, self.s
        target = spec.output.mongodb
        s.metrics = self.asked(document.metrics)
        primary = spec.primary_metric
        if primary in s.metrics:
            s.primary_metric = f"{primary}={s.metrics[primary]:.4f}"
        s.progress = st.progress(document.rows, document.rows)
        s.results_ref = ResultsRef(database=target.database, collection=target.collection,
                                   id=document.id)
        s.predictions_uri = document.predictions_uri
        s.warnings = capped_warnings(document.warnings)
        self.report(document)
        if document.baseline is not None:
            s.baseline = BaselineStatus(deltas=self.asked(document.baseline.deltas),
                                        gate_passed=document.gate.passed if document.gate else None)
        self.leave_lines()
        self.release_cluster()
        st.succeed(s, f"{s.primary_metric or 'done'} on {document.rows} rows", self.ev.generation,
                   self.now)

    def report(self, document: ResultDocument) -> None:
        """Where the report is; a report that could not be written is a warning condition (the
        evaluation succeeded all the same). Reports turned off leave no condition."""
        s = self.s
        s.report_uri = document.report_uri
        if document.report_uri:
            self.condition(ConditionType.ReportWritten, True, Reason.ReportWritten,
                           f"the report is at {document.report_uri}")
        elif document.report_error:
            message = f"the report was not written: {document.report_error}"
            self.condition(ConditionType.ReportWritten, False, Reason.ReportNotWritten, message)
            self.actions.append(Emit(Reason.ReportNotWritten, message, warning=True))

    def lost(self, message: str) -> None:
        """The attempt's Ray head went away with its job. The attempt is recorded as failed (a
        failure document, so no attempt is missing from the results) and, within backoffLimit,
        retried on a fresh RayCluster: the old one is deleted, never reused."""
        ev, spec, s = self.ev, self.spec, self.s
        reason = Reason.RayHeadLost
        if s.ray_cluster and s.job_id:
            self.actions.append(ReleaseJobSlot(self.head(), s.job_id))
        if self.o.store:
            self.actions.append(RecordFailure(ResultDocument.failure(
                ev.uid, s.attempt, ev.name, ev.namespace, reason, message, True,
                spec.model.uri, spec.dataset.uri, finished_at=self.now.isoformat())))
        self.leave_lines()
        self.release_cluster()
        if s.attempt > spec.backoff_limit:
            return self.fail(reason, f"{message}; no retries left (backoffLimit={spec.backoff_limit})")
        if self.own_cluster:
            s.ray_cluster = None  # the next attempt creates its own cluster again
            self.condition(ConditionType.Provisioned, False, reason, message)
        self.condition(ConditionType.JobSubmitted, False, reason, message)
        return self.retry(reason, message, f"attempt {s.attempt} lost ({reason}: {message}) on "
                          "a fresh RayCluster")


JOB_REASONS = {"PENDING": Reason.JobPending, "RUNNING": Reason.JobRunning,
               "SUCCEEDED": Reason.JobSucceeded, "FAILED": Reason.JobFailed,
               "STOPPED": Reason.JobStopped}


def _ended_before_head_lost(document: ResultDocument | None, sid: str) -> JobInfo | None:
    """The job as its result document records it, when the runner wrote one before the head
    went away; None when the attempt left no document (it was cut off)."""
    if document is None:
        return None
    return JobInfo(sid, "SUCCEEDED" if document.succeeded else "FAILED",
                   "the job ended before its Ray head was replaced")


def decide(ev: Evaluation, spec: ModelEvaluationSpec | InvalidSpec, status: ModelEvaluationStatus,
           observed: Observed, now: datetime, settings: OperatorSettings
           ) -> tuple[ModelEvaluationStatus, list[Action]]:
    """The next status and what to do, from what a round observed. Pure."""
    if status.phase.terminal:
        return status.model_copy(deep=True), []
    spec = held_to_creation(spec, status)
    if isinstance(spec, InvalidSpec):
        # Usually refused before anything exists; if it already has a job or cluster (its spec
        # edited, the policy tightened), they are stopped and released like any failure's.
        round_ = _Round(ev, spec, status.model_copy(deep=True), observed, now, settings)
        round_.s.observed_generation = ev.generation
        round_.stop_job("its spec is no longer accepted")
        round_.fail(spec.reason, spec.message)
        return round_.s, round_.actions
    s = prepare(ev, spec, status, now)
    s.observed_generation = ev.generation
    round_ = _Round(ev, spec, s, observed, now, settings)
    round_.run()
    round_.s.message = st.cap(round_.s.message)
    return round_.s, round_.actions
