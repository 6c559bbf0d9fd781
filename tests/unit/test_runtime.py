"""The runtime reads only what a round needs: one read of the RayCluster per round, a Jobs API
client (and its token) per RayCluster uid, nothing at all for an evaluation queued for a slot."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from modeleval.api.reasons import Reason
from modeleval.api.results import submission_id
from modeleval.api.spec import ModelEvaluationSpec
from modeleval.api.status import ConditionType, ModelEvaluationStatus, Phase
from modeleval.controller import runtime as rt, status as st
from modeleval.controller.actions import (CreateCluster, DeleteCluster, QueueForClusterSlot,
                                          QueueForJobSlot, TakeClusterSlot, TakeJobSlot)
from modeleval.controller.decide import decide, plan
from modeleval.controller.observed import Evaluation, Wants
from modeleval.controller.rayjobs import JobInfo
from modeleval.controller.settings import OperatorSettings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
EV = Evaluation("ev", "ns", "u1", 1, NOW - timedelta(minutes=1))
SPEC = ModelEvaluationSpec.model_validate({"task": "ranking", "model": {"uri": "s3://models/r.json"},
                                           "dataset": {"uri": "s3://data/t.txt"}, "metrics": ["ndcg"]})


class FakeKube:
    """Counts the API calls the runtime makes."""

    def __init__(self, uid: str = "c1", ready: bool = True):
        self.calls: list[str] = []
        self.created: list[str] = []
        self.uid, self.ready = uid, ready

    def get_raycluster(self, namespace: str, name: str) -> dict:
        self.calls.append(f"get {name}")
        value = "True" if self.ready else "False"
        return {"metadata": {"name": name, "uid": self.uid, "creationTimestamp": "2026-11-22T11:00:00Z"},
                "spec": {"authOptions": {"mode": "token"}},
                "status": {"conditions": [{"type": "RayClusterProvisioned", "status": value},
                                          {"type": "HeadPodReady", "status": value}]}}

    def pod_problems(self, namespace: str, cluster: str) -> list:
        self.calls.append("pods")
        return []

    def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        self.calls.append(f"secret {name}")
        return "token"

    def delete_raycluster(self, namespace: str, name: str, owner_uid: str) -> bool:
        self.calls.append(f"delete {name}")
        return True

    def create_raycluster(self, manifest: dict) -> bool:
        self.created.append(manifest["metadata"]["name"])
        return True


class FakeJobs:
    made: list[tuple[str, str | None]] = []

    def __init__(self, url: str, token: str | None, timeout: float = 10.0):
        FakeJobs.made.append((url, token))
        self.closed = False

    def get(self, sid: str) -> JobInfo:
        return JobInfo(sid, "RUNNING", "")

    def list(self) -> list[JobInfo]:
        return []

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def runtime(monkeypatch):
    FakeJobs.made = []
    monkeypatch.setattr(rt, "RayJobsClient", FakeJobs)
    kube = FakeKube()
    runtime = rt.Runtime(OperatorSettings(_env_file=None), kube=lambda: kube)
    return runtime, kube


def running() -> ModelEvaluationStatus:
    s = ModelEvaluationStatus(phase=Phase.Running, attempt=1, start_time=NOW, ray_cluster="ev-ray",
                              job_id=submission_id("u1", 1))
    st.set_condition(s, ConditionType.Provisioned, True, Reason.RayClusterReady, "", 1, NOW)
    return s


SLOT_ACTIONS = (TakeClusterSlot, QueueForClusterSlot, TakeJobSlot, QueueForJobSlot)


def slot_round(runtime: rt.Runtime, ev: Evaluation, status: ModelEvaluationStatus, holders):
    """One round as far as the slots go: observe, decide, and perform the slot actions (the
    cluster and the job themselves are left out). What the round observed."""
    context = rt.RoundContext(ev, SPEC, status, holders)
    observed = runtime.observe(context, plan(ev, SPEC, status, NOW))
    _, actions = decide(ev, SPEC, status, observed, NOW, runtime.settings)
    runtime.act(context, None, [action for action in actions if isinstance(action, SLOT_ACTIONS)])
    return observed


def test_a_round_reads_its_cluster_once_and_its_token_once_per_cluster(runtime):
    runtime, kube = runtime
    for _ in range(3):
        s = running()
        r = rt.RoundContext(EV, SPEC, s)
        observed = runtime.observe(r, plan(EV, SPEC, s, NOW))
        assert observed.job.status == "RUNNING" and observed.cluster.ready
        runtime._do(r, None, DeleteCluster("other"))  # acting reuses the round's read
    assert kube.calls.count("get ev-ray") == 3 and kube.calls.count("secret ev-ray") == 1
    assert FakeJobs.made == [("http://ev-ray-head-svc.ns.svc.cluster.local:8265", "token")]

    kube.uid = "c2"  # the cluster was replaced: a new client, a new token
    runtime.observe(rt.RoundContext(EV, SPEC, running()), Wants(cluster=True, job=True))
    assert kube.calls.count("secret ev-ray") == 2 and len(FakeJobs.made) == 2


def test_deleting_a_cluster_drops_its_client(runtime):
    runtime, kube = runtime
    r = rt.RoundContext(EV, SPEC, running())
    runtime.observe(r, Wants(cluster=True, job=True))
    client = runtime.clients._clients["c1"]
    runtime._do(r, None, DeleteCluster("ev-ray"))
    assert client.closed and "c1" not in runtime.clients._clients
    assert kube.calls[-1] == "delete ev-ray"


def test_an_evaluation_queued_for_a_cluster_slot_costs_no_api_call(monkeypatch):
    monkeypatch.setattr(rt, "RayJobsClient", FakeJobs)
    kube = FakeKube()
    runtime = rt.Runtime(OperatorSettings(max_active_evaluations=1, _env_file=None), kube=lambda: kube)
    fresh = ModelEvaluationStatus()
    holder = Evaluation("first", "ns", "u0", 1, NOW - timedelta(hours=1))
    assert slot_round(runtime, holder, fresh, lambda key: []).admission.available
    for _ in range(3):
        observed = slot_round(runtime, EV, fresh, lambda key: ["u0"])
        assert observed.admission.available is False and not observed.cluster_read
    assert kube.calls == []


def test_a_not_ready_cluster_is_read_with_its_pods(runtime):
    runtime, kube = runtime
    kube.ready = False
    s = running()
    observed = runtime.observe(rt.RoundContext(EV, SPEC, s), plan(EV, SPEC, s, NOW))
    assert not observed.cluster.ready and observed.job is None
    assert kube.calls == ["get ev-ray", "pods"]


def test_jobs_clients_are_bounded():
    clients = rt.JobsClients(size=2)
    made = [clients.get(uid, lambda: FakeJobs("u", None)) for uid in ("a", "b", "c")]
    assert made[0].closed and not made[2].closed and list(clients._clients) == ["b", "c"]


def test_one_namespace_cannot_take_every_cluster_slot(monkeypatch):
    """maxActivePerNamespace caps a namespace; in the shared line, the namespace holding fewer
    clusters goes first, then the oldest."""
    settings = OperatorSettings(max_active_evaluations=2, max_active_per_namespace=1, _env_file=None)
    runtime = rt.Runtime(settings, kube=lambda: FakeKube())
    index = {rt.ADMISSION_KEY: ["a1"], rt.NAMESPACE_KEY.format("a"): ["a1"]}

    def ask(uid: str, namespace: str, minutes_ago: int):
        ev = Evaluation(uid, namespace, uid, 1, NOW - timedelta(minutes=minutes_ago))
        return slot_round(runtime, ev, ModelEvaluationStatus(),
                          lambda key: index.get(key, [])).admission

    older_in_a = ask("a2", "a", 60)
    assert not older_in_a.available and older_in_a.scope == "namespace"
    assert ask("b1", "b", 1).available  # newer, but its namespace holds nothing


def test_the_shared_line_serves_the_namespace_holding_fewer_first():
    runtime = rt.Runtime(OperatorSettings(max_active_evaluations=2, _env_file=None), kube=lambda: FakeKube())
    index = {rt.ADMISSION_KEY: ["a1", "x1"], rt.NAMESPACE_KEY.format("a"): ["a1"],
             rt.NAMESPACE_KEY.format("x"): ["x1"]}

    def ask(uid: str, namespace: str, minutes_ago: int):
        ev = Evaluation(uid, namespace, uid, 1, NOW - timedelta(minutes=minutes_ago))
        return slot_round(runtime, ev, ModelEvaluationStatus(),
                          lambda key: index.get(key, [])).admission.available

    assert not ask("a2", "a", 60) and not ask("b1", "b", 1)  # both slots held: both wait
    index[rt.ADMISSION_KEY] = ["a1"]  # x1 finished: one slot free
    assert not ask("a2", "a", 60)  # older, but namespace a already holds a cluster
    assert ask("b1", "b", 1)


def provisioned(attempt: int = 1) -> ModelEvaluationStatus:
    """Its cluster ready, no job yet: the next round asks for a job slot."""
    s = ModelEvaluationStatus(phase=Phase.Provisioning, attempt=attempt, start_time=NOW,
                              ray_cluster="ev-ray")
    st.set_condition(s, ConditionType.Provisioned, True, Reason.RayClusterReady, "", 1, NOW)
    return s


def pools(runtime: rt.Runtime) -> tuple:
    return runtime.slots.state(), runtime.admission.state(), runtime.namespaces.state()


@pytest.mark.parametrize("status, wants", [
    (ModelEvaluationStatus(), Wants(admission=True)),  # queued for a cluster slot
    (provisioned(), Wants(job_slot=True, cluster=True, job=True)),  # queued for a job slot
    (provisioned(), Wants(cluster=True, job=True)),  # its job slot looked at after the read
])
def test_observing_changes_nothing(monkeypatch, status, wants):
    """Observing reads: the same round observed twice sees the same, and no slot is taken and
    no line joined by looking (only the actions a round decides do that)."""
    monkeypatch.setattr(rt, "RayJobsClient", NoJobs)
    settings = OperatorSettings(max_active_evaluations=1, max_active_per_namespace=1,
                                max_jobs_per_head=1, _env_file=None)
    runtime = rt.Runtime(settings, kube=lambda: FakeKube())
    first = Evaluation("first", "ns", "u0", 1, NOW - timedelta(hours=1))
    runtime.act(rt.RoundContext(first, SPEC, provisioned()), None,
                [TakeClusterSlot(), TakeJobSlot(rt.head_url("ev-ray", "ns", settings),
                                                submission_id("u0", 1))])
    late = Evaluation("late", "ns", "u9", 1, NOW)  # waits behind the first in every line
    before = pools(runtime)
    seen = [runtime.observe(rt.RoundContext(late, SPEC, status, lambda key: []), wants)
            for _ in range(2)]
    assert seen[0] == seen[1]
    assert not (seen[0].admission or seen[0].job_slot).available
    assert pools(runtime) == before


def test_a_slot_is_taken_and_a_line_joined_only_by_the_actions():
    """decide chooses: the first evaluation takes the free slot, the second queues for it."""
    settings = OperatorSettings(max_active_evaluations=1, _env_file=None)
    runtime = rt.Runtime(settings, kube=lambda: FakeKube())
    first = Evaluation("first", "ns", "u0", 1, NOW - timedelta(hours=1))
    assert slot_round(runtime, first, ModelEvaluationStatus(), lambda key: []).admission.available
    assert runtime.admission.state() == {rt.ADMISSION_KEY: (frozenset({"u0"}), {})}
    assert not slot_round(runtime, EV, ModelEvaluationStatus(), lambda key: []).admission.available
    holders, waiting = runtime.admission.state()[rt.ADMISSION_KEY]
    assert holders == {"u0"} and list(waiting) == ["u1"]


def test_a_slot_taken_since_the_look_holds_back_what_it_was_for(monkeypatch):
    """Two rounds both saw the one free slot; the first to act takes it, and the other's
    RayCluster waits for a later round instead of passing the limit."""
    monkeypatch.setattr(rt.kopf, "info", lambda body, reason, message: None)
    kube = FakeKube()
    runtime = rt.Runtime(OperatorSettings(max_active_evaluations=1, _env_file=None),
                         kube=lambda: kube)
    other = Evaluation("other", "ns", "u2", 1, NOW - timedelta(hours=1))
    contexts = [rt.RoundContext(ev, SPEC, ModelEvaluationStatus()) for ev in (other, EV)]
    assert all(runtime.observe(context, Wants(admission=True)).admission.available
               for context in contexts)
    create = CreateCluster({"metadata": {"name": "ev-ray"}}, "created")
    runtime.act(contexts[0], None, [TakeClusterSlot()])
    runtime.act(contexts[1], None, [TakeClusterSlot(), create])
    assert kube.created == []
    runtime.act(rt.RoundContext(EV, SPEC, ModelEvaluationStatus()), None, [create])
    assert kube.created == ["ev-ray"]  # not held back by an earlier round's refusal


class NoJobs(FakeJobs):
    def get(self, sid: str) -> None:
        return None
