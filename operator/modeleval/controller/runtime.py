"""The controller's hands and eyes: what :mod:`.decide` asks to see is read here, and what it
decides is done here. Nothing in this module chooses anything.

Per round of one evaluation: at most one read of its RayCluster, and a Jobs API client cached
per RayCluster uid (its token read once per cluster, not per round).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from ..api.reasons import Reason
from ..api.results import ResultDocument, document_id, submission_id
from ..api.spec import ModelEvaluationSpec
from ..api.status import ConditionType, ModelEvaluationStatus
from ..store import MongoResultStore, ResultsStoreError
from . import telemetry
from .status import cap
from .builders import RAY_AUTH_KEY, head_url
from .decide import (Action, ClusterView, CreateCluster, DeleteCluster, Emit, Evaluation, InvalidSpec,
                     LeaveLines, Observed, RecordFailure, ReleaseAdmission, ReleaseJobSlot, Slot,
                     StopJob, StoreLogged, SubmitJob, Wants)
from .kube import CreateRefused, Kube
from .rayjobs import JobsApiError, RayJobsClient, running_jobs
from .results_store import ResultsStores
from .secrets import NamespaceSecrets
from .settings import OperatorSettings
from .slots import Slots

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
class Round:
    """What one round of one evaluation read, kept for the actions that need it."""

    ev: Evaluation
    spec: ModelEvaluationSpec | InvalidSpec
    status: ModelEvaluationStatus
    cluster: ClusterView | None = None
    cluster_read: bool = False


class Runtime:
    def __init__(self, settings: OperatorSettings, kube: Callable[[], Kube] | None = None):
        self.settings = settings
        forget = max(10.0, 5 * settings.poll_interval)
        # Job slots per Ray head (a RayCluster shared through spec.rayClusterName).
        self.slots = Slots(settings.max_jobs_per_head, refresh=max(5.0, settings.poll_interval),
                           forget_after=forget)
        # Cluster slots: the operator's own index is the truth, read on every ask (no API call).
        # Every holder is released when its cluster goes (finished, suspended, deleted), so a
        # grant may wait long for the index to show it: 200 evaluations at once delay kopf's
        # watch by tens of seconds.
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
        self.stores = ResultsStores(settings, NamespaceSecrets(lambda: self.kube))

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = self._kube_factory()
        return self._kube

    def store(self, ev: Evaluation, spec: ModelEvaluationSpec) -> MongoResultStore | None:
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
    def read_cluster(self, r: Round) -> ClusterView | None:
        """The round's one read of its RayCluster (pods are listed only when it is not ready)."""
        if not r.cluster_read:
            name = r.spec.ray_cluster_name or r.status.ray_cluster
            obj = self.kube.get_raycluster(r.ev.namespace, name) if name else None
            r.cluster = None
            if obj is not None:
                view = ClusterView.of(obj)
                if not view.ready and not view.deleting:
                    view = ClusterView.of(obj, self.kube.pod_problems(r.ev.namespace, view.name))
                r.cluster = view
            r.cluster_read = True
        return r.cluster

    def jobs(self, r: Round) -> RayJobsClient | None:
        cluster = self.read_cluster(r)
        if cluster is None:
            return None

        def make() -> RayJobsClient:
            if self.settings.ray_head_override_token is not None:
                token: str | None = self.settings.ray_head_override_token.get_secret_value()
            elif cluster.token_secret:
                token = self.kube.read_secret_key(r.ev.namespace, cluster.token_secret, RAY_AUTH_KEY)
            else:
                token = None
            return RayJobsClient(head_url(cluster.name, r.ev.namespace, self.settings), token,
                                 timeout=self.settings.job_submit_timeout)

        return self.clients.get(cluster.uid or f"{r.ev.namespace}/{cluster.name}", make)

    def _admit(self, ev: Evaluation, holders: Holders) -> Slot:
        """A cluster slot: first within the namespace's share, then among all namespaces, where
        the line is fair: an evaluation whose namespace holds fewer clusters goes first, then
        the oldest."""
        created = ev.created.timestamp() if ev.created else 0.0
        own = NAMESPACE_KEY.format(ev.namespace)
        if self.namespaces.limit:
            answer = self.namespaces.acquire(own, ev.uid, ev.uid, created, lambda: holders(own))
            if not answer.granted:
                return Slot(False, self.namespaces.limit, "namespace")
        held = len(set(holders(own)))
        answer = self.admission.acquire(ADMISSION_KEY, ev.uid, ev.uid, (held, created),
                                        lambda: holders(ADMISSION_KEY))
        return Slot(answer.granted, self.admission.limit)

    def _ask_job_slot(self, r: Round, jobs: RayJobsClient | None) -> Slot:
        cluster = r.spec.ray_cluster_name or r.status.ray_cluster or ""

        def running() -> set[str]:
            client = jobs or self.jobs(r)
            return running_jobs(client.list()) if client is not None else set()

        created = r.ev.created.timestamp() if r.ev.created else 0.0
        answer = self.slots.acquire(head_url(cluster, r.ev.namespace, self.settings),
                                    submission_id(r.ev.uid, r.status.attempt), r.ev.uid, created,
                                    running)
        return Slot(answer.granted, self.slots.limit)

    def observe(self, r: Round, wants: Wants, holders: Holders) -> Observed:
        found: dict[str, Any] = {"store": self.settings.mongodb_uri is not None,
                                 "refused": self.refused.pop(r.ev.uid, None)}
        if found["refused"] is not None:  # it fails this round: nothing else to read
            return Observed(**found)
        if wants.admission:
            found["admission"] = self._admit(r.ev, holders)
            if not found["admission"].granted:
                return Observed(**found)
        try:
            if wants.job_slot:
                found["job_slot"] = self._ask_job_slot(r, None)
                if not found["job_slot"].granted:
                    return Observed(**found)
            if wants.cluster:
                found["cluster"] = self.read_cluster(r)
                found["cluster_read"] = True
            cluster = found.get("cluster")
            if wants.job and cluster is not None and cluster.ready and not cluster.deleting:
                found.update(self._observe_job(r, found))
        except JobsApiError as error:
            found["jobs_error"] = str(error)
        return Observed(**found)

    def _observe_job(self, r: Round, found: dict[str, Any]) -> dict[str, Any]:
        status = r.status
        sid = submission_id(r.ev.uid, status.attempt)
        jobs = self.jobs(r)
        job = jobs.get(sid) if jobs else None
        out: dict[str, Any] = {"job": job}
        if job is None and status.job_id is None and "job_slot" not in found:
            out["job_slot"] = self._ask_job_slot(r, jobs)
        if self.settings.mongodb_uri is None:
            return out
        lost = job is None and status.job_id == sid
        try:
            store = self.store(r.ev, r.spec)
            assert store is not None
            if job is not None and not job.finished:
                out["progress"] = store.get_progress(r.ev.uid, status.attempt)
            elif job is not None or lost:
                out["document"] = store.get(r.ev.uid, status.attempt)
        except ResultsStoreError as error:
            out["store_error"] = self.store_problem(r.ev, error)
        if job is not None and job.finished and out.get("document") is None and jobs is not None:
            # The runner prints a document it could not store to the job's log (read once). Only
            # this attempt's own document is taken from it (id, uid, name and namespace).
            out["logged"] = self.logged.get(sid) or ResultDocument.from_log(
                jobs.log_tail(job), r.ev.uid, status.attempt, r.ev.name, r.ev.namespace)
            if out["logged"] is not None:
                self.logged[sid] = out["logged"]
        return out

    # ------------------------------------------------------------------------- act
    def act(self, r: Round, body: kopf.Body, actions: list[Action]) -> None:
        for action in actions:
            self._do(r, body, action)

    def _do(self, r: Round, body: kopf.Body, action: Action) -> None:
        ns = r.ev.namespace
        match action:
            case CreateCluster(manifest=manifest, message=message, network_policy=policy):
                try:
                    if policy is not None and not self.kube.ensure_network_policy(policy):
                        # Never adopted: a policy someone else made could open the Ray pods to
                        # anything, so no RayCluster is made under it.
                        why = (f"NetworkPolicy {ns}/{policy['metadata']['name']} exists and is "
                               "not this evaluation's (no owner reference to it); the RayCluster "
                               "was not created. Delete or rename that policy, then create the "
                               "evaluation again")
                        self.refused[r.ev.uid] = why
                        kopf.warn(body, reason=Reason.CreateRefused, message=why)
                        return
                    if self.kube.create_raycluster(manifest):
                        kopf.info(body, reason=Reason.RayClusterCreated, message=message)
                except CreateRefused as error:  # the next round fails the evaluation
                    self.refused[r.ev.uid] = error.message
                    kopf.warn(body, reason=Reason.CreateRefused, message=cap(error.message))
            case DeleteCluster(name=name):
                self._delete_cluster(body, r.ev, name)
                cluster = r.cluster if r.cluster_read else None
                if cluster is not None and cluster.name == name:
                    self.clients.forget(cluster.uid or f"{ns}/{name}")
            case SubmitJob(package=package, request=request, attempt=attempt):
                try:
                    jobs = self.jobs(r)
                    if jobs is not None:
                        jobs.ensure_package(package.uri, package.data)
                        jobs.submit(request)
                        kopf.info(body, reason=Reason.JobSubmitted,
                                  message=f"Ray job {request['submission_id']} (attempt {attempt})")
                except JobsApiError as error:  # the next round finds the job, or submits again
                    kopf.warn(body, reason=Reason.RayUnavailable, message=str(error))
            case StopJob(job_id=job_id, why=why):
                try:
                    jobs = self.jobs(r)
                    if jobs is not None and jobs.stop(job_id):
                        kopf.info(body, reason=Reason.JobStopped, message=f"Ray job {job_id} stopped: {why}")
                except (JobsApiError, ApiException, kopf.TemporaryError) as error:
                    log.warning("could not stop Ray job %s: %s", job_id, error)
            case RecordFailure(document=document):
                self._record_failure(r, document)
            case StoreLogged(document=document):
                self._store_logged(r, body, document)
            case Emit(reason=reason, message=message, warning=warning):
                (kopf.warn if warning else kopf.info)(body, reason=reason, message=cap(message))
            case ReleaseJobSlot(head=head, job_id=job_id):
                self.slots.release(head, job_id)
            case LeaveLines(head=head):
                self._leave_lines(r.ev, head)
            case ReleaseAdmission():
                self._release_admission(r.ev)

    def _delete_cluster(self, body: kopf.Body, ev: Evaluation, name: str) -> None:
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

    def _record_failure(self, r: Round, document: ResultDocument) -> None:
        try:
            store = self.store(r.ev, r.spec)
            if store is not None:
                store.insert_if_absent(document)  # never over what the runner wrote
        except ResultsStoreError as error:  # the Event and status still record the attempt
            log.warning("could not record lost attempt %s: %s", document.id, error.message)

    def _store_logged(self, r: Round, body: kopf.Body, document: ResultDocument) -> None:
        """Writes the document the runner printed to its log, only as this evaluation's own."""
        ev = r.ev
        if (document.id, document.uid, document.name, document.namespace) != \
                (document_id(ev.uid, document.attempt), ev.uid, ev.name, ev.namespace):
            log.warning("not storing a logged document of %s/%s: it is not its own", ev.namespace,
                        ev.name)
            return
        try:
            store = self.store(ev, r.spec)
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
        """The evaluation was deleted: its Ray job is stopped, it leaves every line; the
        RayCluster and its Secret go with it (owner references)."""
        telemetry.forget(ev.uid)
        head = head_url(status.ray_cluster, ev.namespace, self.settings) if status.ray_cluster else None
        self._leave_lines(ev, head)
        self._release_admission(ev)
        # A job submitted in the round before (not yet in status) is stopped too.
        submitting = status.condition(ConditionType.JobSubmitted)
        job_id = status.job_id or (submission_id(ev.uid, status.attempt) if submitting is not None
                                   and submitting.reason == Reason.Submitting else None)
        if spec is None or status.phase.terminal or head is None or job_id is None:
            return
        self.slots.release(head, job_id)
        r = Round(ev, spec, status)
        try:
            jobs = self.jobs(r)
            if jobs is not None and jobs.stop(job_id):
                log.info("Ray job %s stopped: the evaluation was deleted", job_id)
        except (JobsApiError, ApiException, kopf.TemporaryError) as error:
            log.warning("could not stop Ray job %s: %s", job_id, error)
        if r.cluster is not None and not spec.ray_cluster_name:
            self.clients.forget(r.cluster.uid)
