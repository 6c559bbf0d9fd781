"""Whose RayCluster an evaluation runs on and deletes is fixed at creation and proved by owner
references: a tenant who edits rayClusterName or keepCluster, or names another's cluster,
cannot get the operator to delete what is not the evaluation's, and a cluster kept after its
run still takes a cluster slot."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from kubernetes.client.rest import ApiException

from modeleval.api import crd
from modeleval.api.reasons import Reason
from modeleval.api.status import ClusterFields, ConditionType as C, Phase
from modeleval.controller import handlers
from modeleval.controller.actions import CreateCluster, DeleteCluster
from modeleval.controller.decide import decide, plan
from modeleval.controller.observed import Observed, Wants
from modeleval.controller.policy import InvalidSpec
from modeleval.controller.kube import CreateRefused, Kube
from modeleval.controller.runtime import ADMISSION_KEY, NAMESPACE_KEY

from .test_decide import CLUSTER, EV, NOW, RUNNING, SETTINGS, ready, seen, spec, status

OWNER = {"apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation", "name": "ev",
         "uid": "u1"}


# ----------------------------------------------------------------------------- fixed fields
def test_the_crd_refuses_a_change_of_ray_cluster_name_or_keep_cluster():
    rules = {r["fieldPath"]: r["rule"] for r in crd.crd()["spec"]["versions"][0]["schema"]
             ["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
             if "oldSelf" in r["rule"]}
    assert set(rules) == {".rayClusterName", ".keepCluster"}
    # A schedule's template may still change.
    template = crd.schedule_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["spec"]["properties"]["template"]
    assert "oldSelf" not in str(template)


def test_the_first_round_records_the_cluster_fields():
    after, _ = decide(EV, spec(keepCluster=True), status(attempt=0), Observed(), NOW, SETTINGS)
    assert after.cluster_fields == ClusterFields(ray_cluster_name=None, keep_cluster=True)


@pytest.mark.parametrize("edit, field", [
    ({"rayClusterName": "platform-cluster"}, "spec.rayClusterName"),
    ({"keepCluster": True}, "spec.keepCluster"),
])
def test_an_edited_cluster_field_fails_the_evaluation_and_deletes_only_its_own(edit, field):
    before = RUNNING.model_copy(update={"cluster_fields": ClusterFields()})
    after, actions = decide(EV, spec(**edit), before, seen(ready()), NOW, SETTINGS)
    assert after.phase == Phase.Failed and after.reason == Reason.InvalidSpec
    assert after.message.startswith(f"{field}: cannot change after creation")
    # The recorded fields decide: its own cluster is deleted, never the one named now.
    assert [a.name for a in actions if isinstance(a, DeleteCluster)] == [CLUSTER]


def test_a_shared_cluster_named_at_creation_is_never_deleted_when_the_name_is_removed():
    before = RUNNING.model_copy(update={"cluster_fields": ClusterFields(ray_cluster_name=CLUSTER)})
    after, actions = decide(EV, spec(), before, seen(ready()), NOW, SETTINGS)
    assert after.phase == Phase.Failed
    assert not [a for a in actions if isinstance(a, DeleteCluster)]
    # Nor when the spec turned invalid at the same time.
    after, actions = decide(EV, InvalidSpec("spec.x: bad"), before, seen(ready()), NOW, SETTINGS)
    assert after.phase == Phase.Failed and not [a for a in actions if isinstance(a, DeleteCluster)]


# ----------------------------------------------------------------------------- owner references
class FakeCustom:
    def __init__(self, owners: list[dict]):
        self.obj = {"metadata": {"name": CLUSTER, "uid": "c1", "ownerReferences": owners}}
        self.deleted: list = []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return self.obj

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.deleted.append((name, kwargs["body"].preconditions.uid))


class FakeNetworking:
    def __init__(self, owners: list[dict]):
        refs = [SimpleNamespace(uid=o["uid"]) for o in owners]
        self.policy = SimpleNamespace(metadata=SimpleNamespace(uid="p1", owner_references=refs))
        self.deleted: list = []

    def read_namespaced_network_policy(self, name, namespace):
        return self.policy

    def delete_namespaced_network_policy(self, name, namespace, **kwargs):
        self.deleted.append((name, kwargs["body"].preconditions.uid))


def kube_with(owners: list[dict]) -> Kube:
    kube = Kube.__new__(Kube)
    kube.custom, kube.networking = FakeCustom(owners), FakeNetworking(owners)
    return kube


@pytest.mark.parametrize("owners, deleted", [
    ([OWNER], True),
    ([{**OWNER, "uid": "u2"}], False),  # another evaluation's, same name
    ([], False),                         # made by someone else
])
def test_only_a_cluster_and_policy_the_evaluation_owns_are_deleted(owners, deleted):
    kube = kube_with(owners)
    assert kube.delete_raycluster("ns", CLUSTER, "u1") is deleted
    assert kube.delete_network_policy("ns", CLUSTER, "u1") is deleted
    # Deleted with the uid read as precondition: a same-named object made since is not.
    assert kube.custom.deleted == ([(CLUSTER, "c1")] if deleted else [])
    assert kube.networking.deleted == ([(CLUSTER, "p1")] if deleted else [])


def test_a_cluster_that_is_not_its_own_is_left_with_an_event(monkeypatch):
    from modeleval.controller import runtime as rt
    warned = []
    monkeypatch.setattr(rt.kopf, "warn", lambda body, reason, message: warned.append((reason, message)))
    runtime = rt.Runtime(SETTINGS.model_copy(update={"operator_namespace": "op",
                                                     "operator_pod_labels": {"app": "op"}}),
                         kube=lambda: kube_with([{**OWNER, "uid": "u2"}]))
    runtime._do(rt.RoundContext(EV, spec(), RUNNING), None, DeleteCluster(CLUSTER))
    assert warned == [(Reason.NotOwned, f"RayCluster {CLUSTER} and NetworkPolicy {CLUSTER} not "
                       "deleted: not owned by this evaluation")]


# ----------------------------------------------------------------------------- refused creates
class RefusingKube:
    def __init__(self, status_code: int):
        self.status_code = status_code

    def ensure_network_policy(self, manifest):
        return True  # the evaluation's own policy: the refusal is the RayCluster's

    def create_raycluster(self, manifest):
        error = ApiException(status=self.status_code, reason="Unprocessable Entity")
        error.body = '{"message": "spec.headGroupSpec: Invalid value"}'
        raise CreateRefused("RayCluster ns/ev-ray", error)


def test_a_refused_create_fails_the_evaluation_with_an_event_instead_of_retrying(monkeypatch):
    from modeleval.controller import runtime as rt
    warned = []
    monkeypatch.setattr(rt.kopf, "warn", lambda body, reason, message: warned.append(reason))
    runtime = rt.Runtime(SETTINGS, kube=lambda: RefusingKube(422))
    before = status(attempt=0)
    after, actions = decide(EV, spec(), before, Observed(), NOW, SETTINGS)
    runtime.act(rt.RoundContext(EV, spec(), after), None, [a for a in actions if isinstance(a, CreateCluster)])
    assert warned == [Reason.CreateRefused]
    r = rt.RoundContext(EV, spec(), after)
    observed = runtime.observe(r, plan(EV, spec(), after, NOW))
    final, _ = decide(EV, spec(), after, observed, NOW, SETTINGS)
    assert final.phase == Phase.Failed and final.reason == Reason.CreateRefused
    assert "RayCluster ns/ev-ray was refused: HTTP 422" in final.message
    assert "HTTP 422 Unprocessable Entity: spec.headGroupSpec: Invalid value" in final.message


@pytest.mark.parametrize("code, refused", [(400, True), (403, True), (413, True), (422, True),
                                           (409, False), (429, False), (500, False)])
def test_only_a_4xx_a_retry_cannot_change_counts_as_refused(code, refused):
    from modeleval.controller import kube as kube_module

    class Custom:
        def create_namespaced_custom_object(self, *args, **kwargs):
            raise ApiException(status=code, reason="x")

    kube = Kube.__new__(Kube)
    kube.custom = Custom()
    manifest = {"metadata": {"name": "ev-ray", "namespace": "ns"}}
    if refused:
        with pytest.raises(CreateRefused):
            kube.create_raycluster(manifest)
    elif code == 409:
        assert kube.create_raycluster(manifest) is False
    else:
        with pytest.raises(kube_module.kopf.TemporaryError):
            kube.create_raycluster(manifest)


# ----------------------------------------------------------------------------- kept clusters
def test_a_kept_cluster_holds_its_slot_while_it_exists():
    meta = {"ownerReferences": [OWNER], "name": CLUSTER}
    assert handlers.holding_clusters(namespace="ns", meta=meta) == {
        ADMISSION_KEY: "u1", NAMESPACE_KEY.format("ns"): "u1"}
    assert handlers.holding_clusters(namespace="ns", meta={**meta, "deletionTimestamp": "x"}) == {}
    assert handlers.holding_clusters(namespace="ns", meta={"name": "platform"}) == {}


def test_a_resumed_evaluation_with_a_kept_cluster_passes_the_cluster_slots_again():
    running = status(Phase.Running, cluster=CLUSTER, job="j",
                     conditions={C.Provisioned: (True, Reason.RayClusterReady, 100)})
    suspended, _ = decide(EV, spec(keepCluster=True, suspend=True), running, seen(ready()), NOW,
                          SETTINGS)
    assert suspended.ray_cluster == CLUSTER and not suspended.is_true(C.Provisioned)
    later = NOW + timedelta(minutes=1)
    assert plan(EV, spec(keepCluster=True), suspended, later) == Wants(admission=True, cluster=True,
                                                                       job=True)
