"""The controller's hands and eyes: what :mod:`.decide` asks to see is read here, and what it
decides is done here. Nothing in this module chooses anything, and observing changes nothing:
a slot is looked at while observing and taken only when a round's actions say so.

Per round of one evaluation: at most one read of its RayCluster, and a Jobs API client cached
per RayCluster uid (its token read once per cluster, not per round).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from ..api.events import cloud_event
from ..api.reasons import Reason
from ..api.results import ResultDocument, document_id, submission_id
from ..api.spec import ModelEvaluationSpec
from ..api.status import ModelEvaluationStatus
from ..store import ResultsStoreError
from . import telemetry
from .status import cap
from .builders import RAY_AUTH_KEY, head_url
from .actions import (GATED_BY_SLOT, Action, CreateCluster, DeleteCluster, Emit, ForgetCluster,
                      LeaveLines, PromoteModel, QueueForClusterSlot, QueueForJobSlot,
                      RecordFailure, ReleaseAdmission, ReleaseJobSlot, StopJob, StoreLogged,
                      SubmitJob, SendEvents, TakeClusterSlot, TakeJobSlot)
from .decide import decide_deletion
from .events import Delivery
from .sinks import EventSinks
from .observed import Evaluation, Observed, RayClusterView, Slot, Wants
from .policy import InvalidSpec
from .kube import CreateRefused, Kube
from .rayjobs import JobInfo, JobsApiError, RayJobsClient, running_jobs
from .results_store import ResultsStores, StatusResultStore
from .mlflow import Registries, RegistryError, resolve_models
from .resolution import unresolved
from .secrets import NamespaceSecrets
from .settings import OperatorSettings
from .slots import Slots
from .tracking import RunTracker

log = logging.getLogger("modeleval.operator")

ADMISSION_KEY = "clusters"
# The index's key of the evaluations of one namespace that hold a cluster.
NAMESPACE_KEY = "namespace/{}"
# The holders of a cluster slot under an index key (ADMISSION_KEY or a NAMESPACE_KEY).
Holders = Callable[[str], Iterable[str]]


class JobsClients:
    """One Jobs API client per RayCluster uid, kept while the cluster lives (bounded)."""

    def __init__(self, size: int = 512):
        self._clients: OrderedDict[str, RayJobsClient] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size

    def get(self, uid: str, make: Callable[[], RayJobsClient]) -> RayJobsClient:
        with self._lock:
            client = self._clients.get(uid)
            if client is not None:
                self._clients.move_to_end(uid)
                return client
        client = make()  # outside the lock: it may read a Secret
        with self._lock:
            self._clients[uid] = client
            while len(self._clients) > self.size:
                self._clients.popitem(last=False)[1].close()
        return client

    def forget(self, uid: str) -> None:
        with self._lock:
            client = self._clients.pop(uid, None)
        if client is not None:
            client.close()


class BoundedDict(OrderedDict):
    """A dict that forgets its oldest entries beyond ``size``."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        while len(self) > self.size:
            self.popitem(last=False)


@dataclass
class RoundContext:
    """What one round of one evaluation read, kept for the actions that need it."""

    ev: Evaluation
    spec: ModelEvaluationSpec | InvalidSpec
    status: ModelEvaluationStatus
    holders: Holders = lambda key: []  # the operator's index of who holds a cluster slot
    cluster: RayClusterView | None = None
    cluster_read: bool = False
    refusal_seen: bool = False  # the round saw why its RayCluster was refused: told once
    deliveries: list[Delivery] = field(default_factory=list)  # what the sinks answered


def send_events(sinks: EventSinks, namespace: str, action: SendEvents) -> list[Delivery]:
    """Each sink's batch of the action's events, as CloudEvents; what each sink answered."""
    batches: dict[str, list[dict[str, Any]]] = {}
    for event in action.events:
        for name in event.sinks:
            batches.setdefault(name, []).append(cloud_event(event, action.source))
    return sinks.send(namespace, list(action.sinks), batches)


def job_place(ev: Evaluation) -> float:
    """An evaluation's place in a head's line of job slots: oldest first."""
    return ev.created.timestamp() if ev.created else 0.0


def cluster_place(ev: Evaluation, holders: Holders) -> tuple[int, float]:
    """Its place in the operator's line of cluster slots: the namespace holding fewer clusters
    first, then the oldest."""
    return len(set(holders(NAMESPACE_KEY.format(ev.namespace)))), job_place(ev)


class Runtime:
    def __init__(self, settings: OperatorSettings, kube: Callable[[], Kube] | None = None):
        self.settings = settings
        forget = max(10.0, 5 * settings.poll_interval)
        # Job slots per Ray head (a RayCluster shared through spec.rayClusterName).
        self.slots = Slots(settings.max_jobs_per_head, refresh=max(5.0, settings.poll_interval),
                           forget_after=forget)
        # Cluster slots: the operator's own index is the truth, read on every look (no API
        # call). Every holder is released when its cluster goes (finished, suspended, deleted),
        # so a grant may wait long for the index to show it: 200 evaluations at once delay
        # kopf's watch by tens of seconds.
        self.admission = Slots(settings.max_active_evaluations, refresh=0.0, forget_after=forget,
                               grace=900.0)
        # The same, per namespace (policy.maxActivePerNamespace).
        self.namespaces = Slots(settings.max_active_per_namespace, refresh=0.0,
                                forget_after=forget, grace=900.0)
        self.clients = JobsClients()
        # Result documents found in finished jobs' logs, so a log is read once, not each round.
        self.logged: BoundedDict[str, ResultDocument] = BoundedDict(256)
        # Evaluations whose RayCluster the API server refused to create (uid -> why), until
        # their next round fails them.
        self.refused: BoundedDict[str, str] = BoundedDict(1024)
        self._kube_factory = kube or Kube.connect
        self._kube: Kube | None = None
        secrets = NamespaceSecrets(lambda: self.kube)
        self.stores = ResultsStores(settings, secrets)
        self.registries = Registries(settings, secrets)
        # How each evaluation's PromoteModel went (uid -> done, why not, whether asking again
        # may help), read by its next round.
        self.promotions: BoundedDict[str, tuple[bool, str, bool]] = BoundedDict(1024)
        self.event_sinks = EventSinks(NamespaceSecrets(lambda: self.kube),
                                      lambda: settings.operator_namespace,
                                      hold=settings.events_backoff_base,
                                      tracker=RunTracker(settings, secrets))

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = self._kube_factory()
        return self._kube

    def store(self, ev: Evaluation, spec: ModelEvaluationSpec) -> StatusResultStore | None:
        """The evaluation's results store, with the credentials that may serve its database
        (:mod:`.results_store`); raises :class:`ResultsStoreError` when there are none."""
        return self.stores.open(ev.namespace, spec.output.mongodb)

    @staticmethod
    def store_problem(ev: Evaluation, error: ResultsStoreError) -> str:
        """What a tenant's status says of a store error: what failed, never the driver's words
        (hosts, topology), which go to the operator's log."""
        log.warning("results store of %s/%s: %s", ev.namespace, ev.name, error.message)
        if error.public == error.message:
            return error.public
        return f"{error.public} (the operator's log has the details)"

    # ------------------------------------------------------------------------- observe
    def read_cluster(self, context: RoundContext) -> RayClusterView | None:
        """The round's one read of its RayCluster (pods are listed only when it is not ready)."""
        if not context.cluster_read:
            name = context.spec.ray_cluster_name or context.status.ray_cluster
            namespace = context.ev.namespace
            obj = self.kube.get_raycluster(namespace, name) if name else None
            context.cluster = None
            if obj is not None:
                view = RayClusterView.of(obj)
                if not view.ready and not view.deleting:
                    view = RayClusterView.of(obj, self.kube.pod_problems(namespace, view.name))
                context.cluster = view
            context.cluster_read = True
        return context.cluster

    def jobs(self, context: RoundContext) -> RayJobsClient | None:
        cluster = self.read_cluster(context)
        if cluster is None:
            return None
        namespace = context.ev.namespace

        def make() -> RayJobsClient:
            if self.settings.ray_head_override_token is not None:
                token: str | None = self.settings.ray_head_override_token.get_secret_value()
            elif cluster.token_secret:
                token = self.kube.read_secret_key(namespace, cluster.token_secret, RAY_AUTH_KEY)
            else:
                token = None
            return RayJobsClient(head_url(cluster.name, namespace, self.settings), token,
                                 timeout=self.settings.job_submit_timeout)

        return self.clients.get(cluster.uid or f"{namespace}/{cluster.name}", make)

    def _look_for_cluster_slot(self, ev: Evaluation, holders: Holders) -> Slot:
        """Whether a cluster slot is free for it: first within the namespace's share, then
        among all namespaces, where the line is fair (:func:`cluster_place`)."""
        own = NAMESPACE_KEY.format(ev.namespace)
        if self.namespaces.limit:
            answer = self.namespaces.look(own, ev.uid, ev.uid, job_place(ev),
                                          lambda: holders(own))
            if not answer.granted:
                return Slot(False, self.namespaces.limit, "namespace")
        answer = self.admission.look(ADMISSION_KEY, ev.uid, ev.uid, cluster_place(ev, holders),
                                     lambda: holders(ADMISSION_KEY))
        return Slot(answer.granted, self.admission.limit)

    def _look_for_job_slot(self, context: RoundContext, jobs: RayJobsClient | None) -> Slot:
        ev, status = context.ev, context.status
        cluster = context.spec.ray_cluster_name or status.ray_cluster or ""

        def running() -> set[str]:
            client = jobs or self.jobs(context)
            return running_jobs(client.list()) if client is not None else set()

        answer = self.slots.look(head_url(cluster, ev.namespace, self.settings),
                                 submission_id(ev.uid, status.attempt), ev.uid, job_place(ev),
                                 running)
        return Slot(answer.granted, self.slots.limit)

    def observe(self, context: RoundContext, wants: Wants) -> Observed:
        """What the round needs to see (``wants``), read and nothing else done: no slot is
        taken, no line joined."""
        found: dict[str, Any] = {"store": self.settings.mongodb_uri is not None,
                                 "refused": self.refused.get(context.ev.uid),
                                 "promotion": self.promotions.pop(context.ev.uid, None)}
        if found["refused"] is not None:  # it fails this round: nothing else to read
            context.refusal_seen = True
            return Observed(**found)
        if wants.registry:
            spec = context.spec
            assert isinstance(spec, ModelEvaluationSpec)
            found["registry"] = resolve_models(self.registries, context.ev.namespace,
                                               unresolved(spec, context.status))
            return Observed(**found)
        if wants.admission:
            found["admission"] = self._look_for_cluster_slot(context.ev, context.holders)
            if not found["admission"].available:
                return Observed(**found)
        try:
            if wants.job_slot:
                found["job_slot"] = self._look_for_job_slot(context, None)
                if not found["job_slot"].available:
                    return Observed(**found)
            if wants.cluster:
                found["cluster"] = self.read_cluster(context)
                found["cluster_read"] = True
            cluster = found.get("cluster")
            if wants.job and cluster is not None and cluster.ready and not cluster.deleting:
                found.update(self._observe_job(context, found))
        except JobsApiError as error:
            found["jobs_error"] = str(error)
        return Observed(**found)

    def _observe_job(self, context: RoundContext, found: dict[str, Any]) -> dict[str, Any]:
        ev, status = context.ev, context.status
        sid = submission_id(ev.uid, status.attempt)
        jobs = self.jobs(context)
        job = jobs.get(sid) if jobs else None
        seen: dict[str, Any] = {"job": job}
        if job is None and status.job_id is None and "job_slot" not in found:
            seen["job_slot"] = self._look_for_job_slot(context, jobs)
        if self.settings.mongodb_uri is None:
            return seen
        lost = job is None and status.job_id == sid
        try:
            store = self.store(ev, context.spec)
            assert store is not None
            if job is not None and not job.finished:
                seen["progress"] = store.get_progress(ev.uid, status.attempt)
            elif job is not None or lost:
                seen["document"], seen["drift"] = store.get_for_status(ev.uid, status.attempt)
        except ResultsStoreError as error:
            seen["store_error"] = self.store_problem(ev, error)
        if job is not None and job.finished and seen.get("document") is None and jobs is not None:
            seen["logged"] = self._logged_document(context, jobs, job)
        return seen

    def _logged_document(self, context: RoundContext, jobs: RayJobsClient,
                         job: JobInfo) -> ResultDocument | None:
        """The document the runner printed to the job's log when it could not store it (the
        log is read once). Only this attempt's own document is taken from it (id, uid, name
        and namespace)."""
        ev, attempt = context.ev, context.status.attempt
        sid = submission_id(ev.uid, attempt)
        logged = self.logged.get(sid) or ResultDocument.from_log(
            jobs.log_tail(job), ev.uid, attempt, ev.name, ev.namespace)
        if logged is not None:
            self.logged[sid] = logged  # a cache of what was read, as the job's log stays
        return logged

    # ------------------------------------------------------------------------- act
    def act(self, context: RoundContext, body: kopf.Body | None, actions: list[Action]) -> None:
        """Performs the round's actions in order. A slot the round saw free may have been
        taken by another evaluation's round since (the look and the take are not under one
        lock): then the cluster or job it was for is left to a later round, which queues."""
        if context.refusal_seen:  # told to the round that saw it (its create may refuse again)
            self.refused.pop(context.ev.uid, None)
        refused = False
        for action in actions:
            if refused and isinstance(action, GATED_BY_SLOT):
                continue
            if self._do(context, body, action) is False:
                refused = True

    def _do(self, context: RoundContext, body: kopf.Body | None, action: Action) -> bool | None:
        ev = context.ev
        match action:
            case CreateCluster():
                self._create_cluster(context, body, action)
            case DeleteCluster(name=name):
                self._delete_cluster(body, ev, name)
                self._forget_client(context, name)
            case ForgetCluster(name=name):
                self._forget_client(context, name)
            case SubmitJob():
                self._submit_job(context, body, action)
            case StopJob(job_id=job_id, why=why):
                self._stop_job(context, body, job_id, why)
            case RecordFailure(document=document):
                self._record_failure(context, document)
            case StoreLogged(document=document):
                self._store_logged(context, body, document)
            case Emit(reason=reason, message=message, warning=warning):
                (kopf.warn if warning else kopf.info)(body, reason=reason, message=cap(message))
            case PromoteModel():
                self._promote(context, action)
            case SendEvents():
                context.deliveries += send_events(self.event_sinks, ev.namespace, action)
            case _:
                return self._do_slots(context, action)
        return None

    def _do_slots(self, context: RoundContext, action: Action) -> bool | None:
        """The slot actions; False when a slot the round saw free was taken since."""
        ev = context.ev
        match action:
            case TakeClusterSlot():
                return self._take_cluster_slot(ev, context.holders)
            case QueueForClusterSlot(scope=scope):
                self._queue_for_cluster_slot(ev, context.holders, scope)
            case TakeJobSlot(head=head, job_id=job_id):
                return self.slots.take(head, job_id, ev.uid, job_place(ev)).granted
            case QueueForJobSlot(head=head):
                self.slots.wait(head, ev.uid, job_place(ev))
            case ReleaseJobSlot(head=head, job_id=job_id):
                self.slots.release(head, job_id)
            case LeaveLines(head=head):
                self._leave_lines(ev, head)
            case ReleaseAdmission():
                self._release_admission(ev)
        return None

    def _promote(self, context: RoundContext, action: PromoteModel) -> None:
        """Sets the alias with the namespace's credentials; the next round records how it went."""
        ev = context.ev
        try:
            registry = self.registries.open(ev.namespace)
            try:
                registry.set_alias(action.name, action.alias, action.version)
            finally:
                registry.close()
            self.promotions[ev.uid] = (True, "", False)
        except RegistryError as error:
            log.warning("promotion of %s/%s: %s", ev.namespace, ev.name, error.message)
            self.promotions[ev.uid] = (False, f"{error.reason}: {error.message}",
                                       error.retryable)

    def _take_cluster_slot(self, ev: Evaluation, holders: Holders) -> bool:
        own = NAMESPACE_KEY.format(ev.namespace)
        if not self.namespaces.take(own, ev.uid, ev.uid, job_place(ev)).granted:
            return False
        return self.admission.take(ADMISSION_KEY, ev.uid, ev.uid,
                                   cluster_place(ev, holders)).granted

    def _queue_for_cluster_slot(self, ev: Evaluation, holders: Holders, scope: str) -> None:
        """Waits in the namespace's line; or, past it (its namespace's share taken), in the
        operator's."""
        own = NAMESPACE_KEY.format(ev.namespace)
        if scope == "namespace" or not self.namespaces.take(own, ev.uid, ev.uid,
                                                            job_place(ev)).granted:
            self.namespaces.wait(own, ev.uid, job_place(ev))
            return
        self.admission.wait(ADMISSION_KEY, ev.uid, cluster_place(ev, holders))

    def _create_cluster(self, context: RoundContext, body: kopf.Body | None,
                        action: CreateCluster) -> None:
        ev, policy = context.ev, action.network_policy
        try:
            if policy is not None and not self.kube.ensure_network_policy(policy):
                # Never adopted: a policy someone else made could open the Ray pods to
                # anything, so no RayCluster is made under it.
                why = (f"NetworkPolicy {ev.namespace}/{policy['metadata']['name']} exists and "
                       "is not this evaluation's (no owner reference to it); the RayCluster "
                       "was not created. Delete or rename that policy, then create the "
                       "evaluation again")
                self.refused[ev.uid] = why
                kopf.warn(body, reason=Reason.CreateRefused, message=why)
                return
            if self.kube.create_raycluster(action.manifest):
                kopf.info(body, reason=Reason.RayClusterCreated, message=action.message)
        except CreateRefused as error:  # the next round fails the evaluation
            self.refused[ev.uid] = error.message
            kopf.warn(body, reason=Reason.CreateRefused, message=cap(error.message))

    def _submit_job(self, context: RoundContext, body: kopf.Body | None,
                    action: SubmitJob) -> None:
        request = action.request
        try:
            jobs = self.jobs(context)
            if jobs is not None:
                jobs.ensure_package(action.package.uri, action.package.data)
                jobs.submit(request)
                kopf.info(body, reason=Reason.JobSubmitted,
                          message=f"Ray job {request['submission_id']} (attempt {action.attempt})")
        except JobsApiError as error:  # the next round finds the job, or submits again
            kopf.warn(body, reason=Reason.RayUnavailable, message=str(error))

    def _stop_job(self, context: RoundContext, body: kopf.Body | None, job_id: str,
                  why: str) -> None:
        """Stops the Ray job; an Event tells of it (a log line, for a deleted evaluation)."""
        try:
            jobs = self.jobs(context)
            if jobs is not None and jobs.stop(job_id):
                if body is None:
                    log.info("Ray job %s stopped: %s", job_id, why)
                else:
                    kopf.info(body, reason=Reason.JobStopped,
                              message=f"Ray job {job_id} stopped: {why}")
        except (JobsApiError, ApiException, kopf.TemporaryError) as error:
            log.warning("could not stop Ray job %s: %s", job_id, error)

    def _forget_client(self, context: RoundContext, name: str) -> None:
        """The cluster is going: the client to its head is dropped (when the round read it)."""
        cluster = context.cluster if context.cluster_read else None
        if cluster is not None and cluster.name == name:
            self.clients.forget(cluster.uid or f"{context.ev.namespace}/{name}")

    def _delete_cluster(self, body: kopf.Body | None, ev: Evaluation, name: str) -> None:
        """Deletes the RayCluster (its token Secret goes with it) and its NetworkPolicy, each
        only when the evaluation owns it."""
        left = []
        if not self.kube.delete_raycluster(ev.namespace, name, ev.uid):
            left.append(f"RayCluster {name}")
        if self.settings.network_policy and self.settings.operator_namespace \
                and not self.kube.delete_network_policy(ev.namespace, name, ev.uid):
            left.append(f"NetworkPolicy {name}")
        if left:
            kopf.warn(body, reason=Reason.NotOwned, message=f"{' and '.join(left)} not deleted: "
                      "not owned by this evaluation")

    def _leave_lines(self, ev: Evaluation, head: str | None) -> None:
        self.admission.leave(ADMISSION_KEY, ev.uid)
        self.namespaces.leave(NAMESPACE_KEY.format(ev.namespace), ev.uid)
        if head:
            self.slots.leave(head, ev.uid)

    def _release_admission(self, ev: Evaluation) -> None:
        self.admission.release(ADMISSION_KEY, ev.uid)
        self.namespaces.release(NAMESPACE_KEY.format(ev.namespace), ev.uid)

    def _record_failure(self, context: RoundContext, document: ResultDocument) -> None:
        try:
            store = self.store(context.ev, context.spec)
            if store is not None:
                store.insert_if_absent(document)  # never over what the runner wrote
        except ResultsStoreError as error:  # the Event and status still record the attempt
            log.warning("could not record lost attempt %s: %s", document.id, error.message)

    def _store_logged(self, context: RoundContext, body: kopf.Body | None,
                      document: ResultDocument) -> None:
        """Writes the document the runner printed to its log, only as this evaluation's own."""
        ev = context.ev
        if (document.id, document.uid, document.name, document.namespace) != \
                (document_id(ev.uid, document.attempt), ev.uid, ev.name, ev.namespace):
            log.warning("not storing a logged document of %s/%s: it is not its own", ev.namespace,
                        ev.name)
            return
        try:
            store = self.store(ev, context.spec)
            if store is not None:
                store.upsert(document)
                kopf.info(body, reason=Reason.ResultStored, message=f"result of attempt "
                          f"{document.attempt} written to MongoDB from the job's log (the store "
                          "was down when it ended)")
        except ResultsStoreError as error:
            log.warning("could not store the logged result of %s: %s", document.id, error.message)

    # ------------------------------------------------------------------------- deletion
    def forget(self, ev: Evaluation, spec: ModelEvaluationSpec | None,
               status: ModelEvaluationStatus) -> None:
        """The evaluation was deleted: what :func:`.decide.decide_deletion` says is done (its
        Ray job stopped, every line left); the RayCluster and its Secret go with it (owner
        references)."""
        telemetry.forget(ev.uid)
        context = RoundContext(ev, spec if spec is not None else InvalidSpec(""), status)
        self.act(context, None, decide_deletion(ev, spec, status, self.settings))
