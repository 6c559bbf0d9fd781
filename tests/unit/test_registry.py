"""models:/ URIs (an MLflow registry's models): the spec's shape, the operator's refusal without a
registry, what the registry's answers mean, and the rounds that resolve, pin and submit."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError

from modeleval.api.reasons import Reason
from modeleval.api.registry import PromotionStatus, RegistryRef, ResolvedModel
from modeleval.api.results import GateResult, ResultDocument, document_id, submission_id
from modeleval.api.spec import ModelEvaluationSpec
from modeleval.api.status import ConditionType as C, ModelEvaluationStatus, Phase
from modeleval.controller.actions import Emit, PromoteModel, SubmitJob
from modeleval.controller.decide import decide, plan
from modeleval.controller.mlflow import RegistryError, artifact_uri, refusal
from modeleval.controller.observed import (Evaluation, Observed, RayClusterView, RegistryAnswer,
                                           Slot, Wants)
from modeleval.controller.policy import InvalidSpec, parse_spec
from modeleval.controller.promotion import PROMOTION_TRIES
from modeleval.controller.rayjobs import JobInfo
from modeleval.controller.resolution import unresolved, with_resolved
from modeleval.controller.settings import OperatorSettings

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)
SETTINGS = OperatorSettings(mongodb_uri="mongodb://store", backoff_base=10, backoff_max=300,
                            mlflow_tracking_uri="http://mlflow.platform:5000", _env_file=None)
EV = Evaluation(name="ev", namespace="ns", uid="u1", generation=1, created=NOW)
PINNED = ResolvedModel(field="spec.model", uri="models:/ranker@champion", name="ranker",
                       version="3", artifact_uri="s3://models/ranker/v3.json")


def raw_spec(model: str = "models:/ranker@champion", **extra: Any) -> dict:
    return {"task": "ranking", "model": {"uri": model}, "dataset": {"uri": "s3://data/t.txt"},
            "metrics": ["ndcg@10"], **extra}


def spec(model: str = "models:/ranker@champion", **extra: Any) -> ModelEvaluationSpec:
    return ModelEvaluationSpec.model_validate(raw_spec(model, **extra))


# ----------------------------------------------------------------------------- the spec
@pytest.mark.parametrize("uri, ref", [
    ("models:/ranker/3", RegistryRef("ranker", version="3")),
    ("models:/ranker@champion", RegistryRef("ranker", alias="champion")),
    ("models:/team.ranker-v2_x@prod-eu", RegistryRef("team.ranker-v2_x", alias="prod-eu")),
])
def test_models_uris_are_accepted_and_parsed(uri, ref):
    assert spec(uri).model.uri == uri
    assert RegistryRef.parse(uri) == ref and str(ref) == uri


@pytest.mark.parametrize("uri", ["models:/ranker", "models:/ranker/0", "models:/ranker/v3",
                                 "models:/a/b/3", "models:/ranker@", "models:/ranker@1x",
                                 "models:/ranker@a b", "models://ranker/3"])
def test_malformed_models_uris_are_refused_naming_the_field(uri):
    with pytest.raises(ValidationError, match="model.uri"):
        spec(uri)


def test_baseline_and_challengers_take_models_uris_and_the_dataset_does_not():
    both = spec("models:/ranker/4", baseline={"model": {"uri": "models:/ranker@champion"}},
                challengers=[{"name": "next", "model": {"uri": "models:/ranker/5"}}])
    assert [uri for _, uri in unresolved(both, ModelEvaluationStatus())] == [
        "models:/ranker/4", "models:/ranker@champion", "models:/ranker/5"]
    with pytest.raises(ValidationError, match="dataset.uri"):
        ModelEvaluationSpec.model_validate({**raw_spec(), "dataset": {"uri": "models:/data/1"}})


def test_an_operator_without_a_registry_refuses_models_uris_with_a_clear_reason():
    refused = parse_spec(raw_spec(), OperatorSettings(_env_file=None))
    assert isinstance(refused, InvalidSpec)
    assert refused.reason == Reason.RegistryNotConfigured
    assert "spec.model.uri" in refused.message and "mlflow.trackingUri" in refused.message
    assert isinstance(parse_spec(raw_spec(), SETTINGS), ModelEvaluationSpec)


# ----------------------------------------------------------------------------- the registry
def test_a_versions_artefact_is_its_s3_source_or_a_served_artefact_under_the_destination():
    assert artifact_uri({"source": "s3://b/m.json"}, None) == "s3://b/m.json"
    assert artifact_uri({"source": "mlflow-artifacts:/1/abc/artifacts/model.json"},
                        "s3://mlflow/artifacts/") == "s3://mlflow/artifacts/1/abc/artifacts/model.json"
    assert artifact_uri({"source": "models:/m-1", "storage_location": "s3://b/m-1/model.ubj"},
                        None) == "s3://b/m-1/model.ubj"
    with pytest.raises(RegistryError, match="not in S3") as error:
        artifact_uri({"name": "r", "version": "1", "source": "file:///tmp/model"}, None)
    assert error.value.reason == Reason.ModelNotFound


@pytest.mark.parametrize("code, body, reason, retryable", [
    (401, "You are not authenticated.", Reason.RegistryAccessDenied, False),
    (403, '{"message": "Permission denied"}', Reason.RegistryAccessDenied, False),
    (404, '{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model Version not found"}',
     Reason.ModelNotFound, False),
    (400, '{"error_code": "INVALID_PARAMETER_VALUE", "message": "alias nope not found."}',
     Reason.ModelNotFound, False),
    (503, "upstream down", Reason.RegistryUnavailable, True),
])
def test_what_each_registry_answer_means(code, body, reason, retryable):
    refused = refusal(httpx.Response(code, text=body), "models:/ranker@nope")
    assert (refused.reason, refused.retryable) == (reason, retryable)
    assert "models:/ranker@nope" in refused.message
    assert refused.code == (json.loads(body).get("error_code") if body.startswith("{") else None)


# ----------------------------------------------------------------------------- the rounds
def round_(status: ModelEvaluationStatus, observed: Observed, the_spec=None):
    return decide(EV, the_spec or spec(), status, observed, NOW, SETTINGS)


def test_the_first_round_asks_the_registry_and_nothing_else():
    assert plan(EV, spec(), ModelEvaluationStatus(), NOW) == Wants(registry=True)
    pinned = ModelEvaluationStatus(attempt=1, start_time=NOW, resolved_models=[PINNED])
    assert plan(EV, spec(), pinned, NOW) == Wants(admission=True)


def test_a_resolved_version_is_pinned_in_status_with_a_condition_and_an_event():
    after, actions = round_(ModelEvaluationStatus(), Observed(registry=RegistryAnswer((PINNED,))))
    assert after.resolved_models == [PINNED]
    assert after.condition(C.ModelResolved).true
    assert "version 3" in after.condition(C.ModelResolved).message
    assert any(isinstance(a, Emit) and a.reason == Reason.ModelResolved for a in actions)


def test_an_unknown_model_fails_the_evaluation_naming_it():
    answer = RegistryAnswer(problem=(Reason.ModelNotFound, "spec.model.uri: alias nope not found"))
    after, _ = round_(ModelEvaluationStatus(), Observed(registry=answer))
    assert (after.phase, after.reason) == (Phase.Failed, Reason.ModelNotFound)
    assert "spec.model.uri" in after.message


def test_an_unreachable_registry_is_asked_again_after_a_growing_backoff_never_failed():
    answer = RegistryAnswer(problem=(Reason.RegistryUnavailable, "did not answer"), retryable=True)
    first, actions = round_(ModelEvaluationStatus(), Observed(registry=answer))
    assert first.phase == Phase.Pending and not actions
    assert first.condition(C.ModelResolved).reason == Reason.RegistryUnavailable
    assert first.next_retry_time == NOW + timedelta(seconds=10)
    # Down for 100 s: the next wait is 100 s.
    first.conditions[0].last_transition_time = NOW - timedelta(seconds=100)
    first.next_retry_time = NOW
    second, _ = round_(first, Observed(registry=answer))
    assert second.next_retry_time == NOW + timedelta(seconds=100)
    assert plan(EV, spec(), second, NOW) == Wants(cluster=False)  # waiting: nothing is read


def test_the_job_gets_the_pinned_artefact_not_the_alias():
    ready = RayClusterView(name="ev-ray", uid="c1", ready=True, created=NOW, token_secret="t")
    before = ModelEvaluationStatus(attempt=2, start_time=NOW, ray_cluster="ev-ray",
                                   resolved_models=[PINNED])
    after, actions = round_(before, Observed(store=True, cluster_read=True, cluster=ready,
                                             job_slot=Slot(True)))
    submit = next(a for a in actions if isinstance(a, SubmitJob))
    with zipfile.ZipFile(io.BytesIO(submit.package.data)) as archive:
        manifest = yaml.safe_load(archive.read(archive.namelist()[0]))
    assert manifest["spec"]["model"]["uri"] == "s3://models/ranker/v3.json"
    assert after.resolved_models == [PINNED]


def test_with_resolved_replaces_only_the_pinned_fields():
    both = spec("s3://models/plain.json", baseline={"model": {"uri": "models:/ranker@champion"}})
    pinned = PINNED.model_copy(update={"field": "spec.baseline.model"})
    replaced = with_resolved(both, [pinned])
    assert replaced.model.uri == "s3://models/plain.json"
    assert replaced.baseline.model.uri == "s3://models/ranker/v3.json"


# ----------------------------------------------------------------------------- promotion
PROMOTE = {"promote": {"alias": "champion"}, "gate": [{"metric": "ndcg@10", "min": 0.5}]}


def finished(passed: bool | None, promotion: PromotionStatus | None = None,
             outcome: tuple[bool, str, bool] | None = None, **extra: Any):
    """A round that sees the job succeeded with a gate that passed (or not)."""
    ready = RayClusterView(name="ev-ray", uid="c1", ready=True, created=NOW, token_secret="t")
    before = ModelEvaluationStatus(attempt=1, start_time=NOW, ray_cluster="ev-ray",
                                   job_id=submission_id("u1", 1), phase=Phase.Running,
                                   resolved_models=[PINNED], promotion=promotion)
    document = ResultDocument(_id=document_id("u1", 1), uid="u1", attempt=1, name="ev",
                              status="Succeeded", rows=10, metrics={"ndcg@10": 0.8},
                              gate=GateResult(passed=passed) if passed is not None else None)
    observed = Observed(store=True, cluster_read=True, cluster=ready, document=document,
                        job=JobInfo(submission_id("u1", 1), "SUCCEEDED", "done"),
                        promotion=outcome)
    return round_(before, observed, spec(**{**PROMOTE, **extra}))


def test_promote_needs_a_models_uri_and_gate_rules():
    with pytest.raises(ValidationError, match="promote needs spec.model.uri"):
        spec("s3://models/r.json", **PROMOTE)
    with pytest.raises(ValidationError, match="promote needs gate rules"):
        spec(promote={"alias": "champion"})


def test_a_passing_gate_asks_for_the_alias_on_the_pinned_version_before_succeeding():
    after, actions = finished(passed=True)
    assert PromoteModel("ranker", "champion", "3") in actions
    assert after.phase == Phase.Running  # not Succeeded until the promotion's outcome is known
    assert after.promotion == PromotionStatus(alias="champion", name="ranker", version="3")
    assert after.condition(C.Promoted).reason == Reason.Promoting


def test_the_outcome_is_recorded_and_the_evaluation_succeeds_either_way():
    asked = PromotionStatus(alias="champion", name="ranker", version="3")
    done, actions = finished(True, asked, outcome=(True, "", False))
    assert done.phase == Phase.Succeeded and done.promotion.promoted
    assert done.condition(C.Promoted).true
    assert not any(isinstance(a, PromoteModel) for a in actions)
    refused, actions = finished(True, asked, outcome=(False, "RegistryAccessDenied: refused",
                                                           False))
    assert refused.phase == Phase.Succeeded and not refused.promotion.promoted
    assert refused.condition(C.Promoted).reason == Reason.PromotionFailed
    assert any(isinstance(a, Emit) and a.warning and a.reason == Reason.PromotionFailed
               for a in actions)


def test_a_registry_that_does_not_answer_is_asked_again_after_a_backoff_a_few_times():
    asked = PromotionStatus(alias="champion", name="ranker", version="3")
    down = (False, "RegistryUnavailable: the MLflow server did not answer", True)
    waiting, actions = finished(True, asked, outcome=down)
    assert waiting.phase == Phase.Running and waiting.promotion.tries == 1
    assert waiting.next_retry_time == NOW + timedelta(seconds=OperatorSettings(
        _env_file=None).backoff_base)
    promoted = waiting.condition(C.Promoted)
    assert (promoted.status, promoted.reason) == ("False", Reason.Promoting)
    assert "asked again in" in promoted.message and "try 2 of 5" in promoted.message
    assert not any(isinstance(a, PromoteModel) for a in actions)  # not before the backoff
    # The round after the wait asks again.
    _, actions = finished(True, waiting.promotion, outcome=None)
    assert PromoteModel("ranker", "champion", "3") in actions
    # The last try that finds the server down: failed, and the evaluation succeeds.
    last = asked.model_copy(update={"tries": PROMOTION_TRIES - 1})
    after, _ = finished(True, last, outcome=down)
    assert after.phase == Phase.Succeeded
    assert after.condition(C.Promoted).reason == Reason.PromotionFailed


def test_an_outcome_lost_to_a_restart_is_asked_for_again_and_a_done_one_never():
    asked = PromotionStatus(alias="champion", name="ranker", version="3")
    _, actions = finished(True, asked, outcome=None)
    assert PromoteModel("ranker", "champion", "3") in actions
    done = asked.model_copy(update={"promoted": True})
    after, actions = finished(True, done, outcome=None)
    assert after.phase == Phase.Succeeded
    assert not any(isinstance(a, PromoteModel) for a in actions)


@pytest.mark.parametrize("passed", [False, None])
def test_a_failed_or_missing_gate_never_promotes(passed):
    after, actions = finished(passed)
    assert after.phase == Phase.Succeeded and after.promotion is None
    assert not any(isinstance(a, PromoteModel) for a in actions)
    assert after.condition(C.Promoted).reason == Reason.NotPromoted


def test_the_jobs_spec_of_a_promoting_evaluation_validates_and_leaves_promotion_to_the_operator():
    replaced = with_resolved(spec(**PROMOTE), [PINNED])
    assert replaced.model.uri == "s3://models/ranker/v3.json" and replaced.promote is None
