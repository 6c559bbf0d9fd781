"""kopf wiring: what the handlers are registered with (read from kopf's registry in a process of
its own, so the operator's module-level settings come from the environment given)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def registered(env: dict[str, str]) -> dict[str, dict]:
    code = ("import json, kopf, modeleval.controller.handlers\n"
            "r = kopf.get_default_registry()\n"
            "print(json.dumps({h.id: {'backoff': h.backoff, 'interval': getattr(h, 'interval', None)}"
            " for reg in (r._spawning, r._changing) for h in reg.get_all_handlers()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout)


def test_a_failed_handler_runs_again_after_the_error_retry_not_kopfs_minute():
    """After an API outage every evaluation resumes within operator.errorRetrySeconds (5 s by
    default), not after kopf's default backoff of 60 s."""
    handlers = registered({"MODELEVAL_ERROR_RETRY": "3", "MODELEVAL_POLL_INTERVAL": "7"})
    assert {"modelevaluation_reconcile", "modelevaluation_delete", "modelevaluation_ttl",
            "evaluationschedule_reconcile", "evaluationschedule_delete"} <= set(handlers)
    assert {h["backoff"] for h in handlers.values()} == {3.0}
    assert handlers["modelevaluation_reconcile"]["interval"] == 7.0
    assert {h["backoff"] for h in registered({}).values()} == {5.0}


def test_kopfs_last_handled_configuration_is_a_digest_whatever_the_spec_size():
    """A 5,000-column spec is ~170 KB, and kubectl keeps a copy of it in an annotation already;
    kopf's own copy would pass the API server's 256 KiB bound on annotations and every patch of
    kopf's (its finalizer's removal included) would be refused."""
    import kopf

    from modeleval.controller.handlers import DigestDiffBaseStorage

    storage = DigestDiffBaseStorage(prefix="modeleval.dev", key="last-handled-configuration")
    columns = [f"feature_with_a_long_name_{i:05d}" for i in range(5000)]
    raw = {"apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
           "metadata": {"name": "wide", "namespace": "ns", "uid": "u", "labels": {"team": "a"}},
           "spec": {"dataset": {"featureColumns": columns}}, "status": {"phase": "Running"}}
    body = kopf.Body(raw)
    essence = storage.build(body=body)
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=essence)
    annotations = patch["metadata"]["annotations"]
    assert sum(len(k) + len(v) for k, v in annotations.items()) < 200
    stored = kopf.Body({**raw, "metadata": {**raw["metadata"], "annotations": annotations}})
    assert storage.fetch(body=stored) == essence == storage.build(body=stored)  # round trip
    changed = {**raw, "spec": {"dataset": {"featureColumns": columns[:-1]}}}
    assert storage.build(body=kopf.Body(changed)) != essence  # a spec change is still seen
    status_only = {**raw, "status": {"phase": "Succeeded"}}
    assert storage.build(body=kopf.Body(status_only)) == essence  # a status change is not


def test_a_deleted_evaluation_is_not_held_a_minute_by_a_timer_in_its_round():
    """kopf removes the finalizer once the object's timers stopped and looks again after
    ``cancellation_polling`` (60 s by default) when one was inside a round: the TTL timer always
    is when it deletes, so TTL deletions took a minute, now about a second."""
    import kopf

    from modeleval.controller.handlers import DigestDiffBaseStorage, configure

    settings = kopf.OperatorSettings()
    configure(settings)
    assert settings.background.cancellation_polling <= 2
    assert isinstance(settings.persistence.diffbase_storage, DigestDiffBaseStorage)
    assert settings.persistence.finalizer == "modeleval.dev/finalizer"
