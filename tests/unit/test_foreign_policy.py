"""A NetworkPolicy with the RayCluster's name that the evaluation does not own (a tenant's own,
or another evaluation's) is never adopted: no RayCluster is made under it, and the evaluation
fails saying which policy holds the name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kubernetes.client.rest import ApiException

from modeleval.api.reasons import Reason
from modeleval.api.status import Phase
from modeleval.controller import runtime as rt
from modeleval.controller.builders import build_network_policy
from modeleval.controller.actions import CreateCluster
from modeleval.controller.decide import decide, plan
from modeleval.controller.observed import Observed
from modeleval.controller.kube import Kube

from .test_decide import EV, NOW, SETTINGS, spec, status

POLICY_SETTINGS = SETTINGS.model_copy(update={"operator_namespace": "modeleval-system",
                                              "operator_pod_labels": {"app": "modeleval"}})
CLUSTER = "ev-ray"


class Networking:
    """The NetworkPolicy API with one same-named policy already there (or none)."""

    def __init__(self, owners: list[str] | None):
        self.owners = owners
        self.created: list[dict] = []

    def create_namespaced_network_policy(self, namespace, body, **_):
        if self.owners is not None:
            raise ApiException(status=409, reason="Conflict")
        self.created.append(body)

    def read_namespaced_network_policy(self, name, namespace):
        refs = [SimpleNamespace(uid=uid) for uid in self.owners or []]
        return SimpleNamespace(metadata=SimpleNamespace(owner_references=refs or None))

    def patch_namespaced_network_policy(self, *args, **kwargs):  # never called: never adopted
        raise AssertionError("a same-named policy was patched")

    replace_namespaced_network_policy = patch_namespaced_network_policy


def kube_with(owners: list[str] | None) -> Kube:
    kube = Kube.__new__(Kube)
    kube.networking = Networking(owners)
    return kube


POLICY = build_network_policy(CLUSTER, EV.name, EV.namespace, EV.uid, POLICY_SETTINGS)


@pytest.mark.parametrize("owners, ours", [
    (None, True),           # created now
    ([EV.uid], True),       # created by an earlier round of this evaluation
    (["another"], False),   # another evaluation's (same cluster name)
    ([], False),            # made by the tenant, no owner
])
def test_a_same_named_policy_counts_only_when_the_evaluation_owns_it(owners, ours):
    kube = kube_with(owners)
    assert kube.ensure_network_policy(POLICY) is ours
    assert len(kube.networking.created) == (1 if owners is None else 0)


class ForeignPolicyKube:
    """A namespace where a tenant's policy already holds the RayCluster's name."""

    def __init__(self):
        self.created: list[dict] = []

    def ensure_network_policy(self, manifest):
        return False

    def create_raycluster(self, manifest):
        self.created.append(manifest)
        return True


def test_no_cluster_is_made_under_a_policy_the_evaluation_does_not_own(monkeypatch):
    warned = []
    monkeypatch.setattr(rt.kopf, "warn", lambda body, reason, message: warned.append((reason, message)))
    monkeypatch.setattr(rt.kopf, "info", lambda body, reason, message: None)
    kube = ForeignPolicyKube()
    runtime = rt.Runtime(POLICY_SETTINGS, kube=lambda: kube)
    after, actions = decide(EV, spec(), status(attempt=0), Observed(), NOW, POLICY_SETTINGS)
    creates = [a for a in actions if isinstance(a, CreateCluster)]
    assert creates and creates[0].network_policy is not None
    runtime.act(rt.RoundContext(EV, spec(), after), None, creates)
    assert kube.created == []
    assert [reason for reason, _ in warned] == [Reason.CreateRefused]
    r = rt.RoundContext(EV, spec(), after)
    observed = runtime.observe(r, plan(EV, spec(), after, NOW))
    final, _ = decide(EV, spec(), after, observed, NOW, POLICY_SETTINGS)
    assert final.phase == Phase.Failed and final.reason == Reason.CreateRefused
    assert f"NetworkPolicy ns/{CLUSTER} exists and is not this evaluation's" in final.message


class RefusingNetworking(Networking):
    """The API server refuses the policy for good (an admission webhook, a quota: HTTP 403/422)."""

    def __init__(self, status: int):
        super().__init__(None)
        self.status = status

    def create_namespaced_network_policy(self, namespace, body, **_):
        raise ApiException(status=self.status, reason="Forbidden")


@pytest.mark.parametrize("code", [403, 422])
def test_a_policy_the_api_server_refuses_fails_the_evaluation_instead_of_retrying(monkeypatch, code):
    warned = []
    monkeypatch.setattr(rt.kopf, "warn", lambda body, reason, message: warned.append((reason, message)))
    monkeypatch.setattr(rt.kopf, "info", lambda body, reason, message: None)
    kube = kube_with(None)
    kube.networking = RefusingNetworking(code)
    made: list[dict] = []
    kube.create_raycluster = lambda manifest: made.append(manifest) or True
    runtime = rt.Runtime(POLICY_SETTINGS, kube=lambda: kube)
    after, actions = decide(EV, spec(), status(attempt=0), Observed(), NOW, POLICY_SETTINGS)
    creates = [a for a in actions if isinstance(a, CreateCluster)]
    runtime.act(rt.RoundContext(EV, spec(), after), None, creates)  # no TemporaryError: no retry loop
    assert made == []
    assert [reason for reason, _ in warned] == [Reason.CreateRefused]
    r = rt.RoundContext(EV, spec(), after)
    observed = runtime.observe(r, plan(EV, spec(), after, NOW))
    final, _ = decide(EV, spec(), after, observed, NOW, POLICY_SETTINGS)
    assert final.phase == Phase.Failed and final.reason == Reason.CreateRefused
    assert f"NetworkPolicy ns/{CLUSTER} was refused: HTTP {code}" in final.message
