"""What a deleted evaluation leaves behind, decided as a pure function of its status and spec
(``decide_deletion``), and done by the runtime (``Runtime.forget``)."""

from __future__ import annotations

import pytest

from modeleval.api.reasons import Reason
from modeleval.api.status import ConditionType as C, ModelEvaluationStatus, Phase
from modeleval.controller import runtime as rt
from modeleval.controller.actions import (ForgetCluster, LeaveLines, ReleaseAdmission,
                                          ReleaseJobSlot, StopJob, TakeClusterSlot, TakeJobSlot)
from modeleval.controller.decide import decide_deletion
from modeleval.controller.rayjobs import JobInfo
from modeleval.controller.settings import OperatorSettings

from .test_decide import CLUSTER, EV, HEAD, RUNNING, SETTINGS, SID1, spec, status

STOPPED = StopJob(SID1, "the evaluation was deleted")

CASES = {
    "running on its own cluster: job stopped, its client dropped": (
        RUNNING, spec(), [LeaveLines(HEAD), ReleaseAdmission(), ReleaseJobSlot(HEAD, SID1),
                          STOPPED, ForgetCluster(CLUSTER)]),
    "running on a shared cluster: job stopped, the cluster's client kept": (
        RUNNING, spec(rayClusterName=CLUSTER),
        [LeaveLines(HEAD), ReleaseAdmission(), ReleaseJobSlot(HEAD, SID1), STOPPED]),
    "submitted in the round before (its id not yet in status): that job stopped": (
        status(Phase.Provisioning, cluster=CLUSTER,
               conditions={C.JobSubmitted: (False, Reason.Submitting, 1)}),
        spec(), [LeaveLines(HEAD), ReleaseAdmission(), ReleaseJobSlot(HEAD, SID1), STOPPED,
                 ForgetCluster(CLUSTER)]),
    "queued for a job slot: only the lines left": (
        status(Phase.Provisioning, cluster=CLUSTER,
               conditions={C.JobSubmitted: (False, Reason.Queued, 1)}),
        spec(), [LeaveLines(HEAD), ReleaseAdmission()]),
    "queued for a cluster: no head, only the lines left": (
        ModelEvaluationStatus(), spec(), [LeaveLines(None), ReleaseAdmission()]),
    "finished: nothing runs": (
        status(Phase.Succeeded, cluster=CLUSTER, job=SID1), spec(),
        [LeaveLines(HEAD), ReleaseAdmission()]),
    "a spec that does not validate: nothing is known to run": (
        RUNNING, None, [LeaveLines(HEAD), ReleaseAdmission()]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_deletion_decision(name: str) -> None:
    before, spec_, expected = CASES[name]
    copy = before.model_copy(deep=True)
    assert decide_deletion(EV, spec_, before, SETTINGS) == expected
    assert before == copy  # pure: its input untouched


class Kube:
    def get_raycluster(self, namespace: str, name: str) -> dict:
        return {"metadata": {"name": name, "uid": "c1"},
                "status": {"conditions": [{"type": "RayClusterProvisioned", "status": "True"},
                                          {"type": "HeadPodReady", "status": "True"}]}}


class Jobs:
    stopped: list[str] = []

    def __init__(self, url: str, token: str | None, timeout: float = 10.0):
        self.closed = False

    def stop(self, job_id: str) -> bool:
        Jobs.stopped.append(job_id)
        return True

    def close(self) -> None:
        self.closed = True


def test_forgetting_a_deleted_evaluation_does_what_was_decided(monkeypatch):
    monkeypatch.setattr(rt, "RayJobsClient", Jobs)
    Jobs.stopped = []
    settings = OperatorSettings(max_jobs_per_head=1, max_active_evaluations=1, _env_file=None)
    runtime = rt.Runtime(settings, kube=lambda: Kube())
    context = rt.RoundContext(EV, spec(), RUNNING)
    runtime.act(context, None, [TakeClusterSlot(), TakeJobSlot(HEAD, SID1)])
    assert runtime.admission.state() and runtime.slots.state()
    runtime.forget(EV, spec(), RUNNING)
    assert Jobs.stopped == [SID1]
    assert runtime.admission.state() == {} and runtime.slots.state() == {}
    assert runtime.clients._clients == {}  # the cluster goes with it: so does its client
