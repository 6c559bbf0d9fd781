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
