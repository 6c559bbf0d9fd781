"""`python -m modeleval.controller`: runs the operator (JSON logs, liveness, Prometheus metrics)."""

from __future__ import annotations

import logging

import kopf

from . import handlers  # noqa: F401 - registers the handlers
from .handlers import SETTINGS


def main() -> None:
    kopf.configure(verbose=False, log_format=kopf.LogFormat.JSON, log_prefix=True)
    # Per-tick "handler succeeded" lines and every HTTP request would drown the useful lines;
    # transitions are still logged as warnings or posted as Events.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    namespaces = SETTINGS.namespaces
    kopf.run(
        standalone=True,  # one replica (Recreate strategy): no peering objects needed
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{SETTINGS.metrics_host}:{SETTINGS.health_port}/healthz",
    )


if __name__ == "__main__":
    main()
