"""Shared fixtures. The `bed` fixture starts the local test bed once per session (or reuses the
one named by MODELEVAL_BED_DIR, e.g. from `make cluster-up`) and stops it at the end."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from testbed import RAY_LOOPBACK_ENV, Endpoints, TestBed


def _running_bed(directory: Path) -> Endpoints | None:
    state = directory / "state.json"
    if not state.exists():
        return None
    data = json.loads(state.read_text())
    data.pop("specs", None)  # how each component was started: for restarts, not an endpoint
    return Endpoints(**data) if "kubeconfig" in data else None


_REUSE = os.environ.get("MODELEVAL_BED_DIR")
_REUSED = _running_bed(Path(_REUSE)) if _REUSE else None
# Ray reads its auth token once per process, so the token must be in the environment before
# anything imports ray: take the reused bed's, or choose the one the bed will be started with.
os.environ.update(RAY_LOOPBACK_ENV)  # any Ray a test starts stays on 127.0.0.1 too
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = _REUSED.ray_auth_token if _REUSED else secrets.token_hex(32)


@pytest.fixture(scope="session")
def bed() -> Endpoints:
    """A running test bed; its endpoints are also exported to os.environ for client libraries."""
    owned: TestBed | None = None
    endpoints = _REUSED
    if endpoints is None:
        # A short path: Ray's unix sockets live under it and must stay below 108 characters.
        directory = Path(tempfile.mkdtemp(prefix="mebed-", dir="/tmp"))
        owned = TestBed(directory, ray_auth_token=os.environ["RAY_AUTH_TOKEN"],
                        mlflow=_WANTS_MLFLOW[0])
        endpoints = owned.up()
    saved = dict(os.environ)
    os.environ.update(endpoints.env())
    _BED_LOGS.append(endpoints.logs)
    try:
        yield endpoints
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if owned is not None:
            owned.down()
            # Keep the logs a failing test pointed at; drop the data (etcd, MinIO, Ray sessions).
            for entry in owned.dir.iterdir():
                if entry.name != "logs" and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)


_BED_LOGS: list[dict[str, str]] = []
# Whether a collected test uses the MLflow server: the bed then starts one with the rest.
_WANTS_MLFLOW = [False]


@pytest.fixture(scope="session")
def mlflow_server(bed) -> Endpoints:
    """The bed, with its MLflow tracking server (bed.mlflow_uri; the admin's credentials in
    MLFLOW_TRACKING_USERNAME/PASSWORD of the environment)."""
    if not bed.mlflow_uri:
        pytest.fail("the test bed has no MLflow server: a bed reused through MODELEVAL_BED_DIR "
                    "must be started with one (python -m testbed up --mlflow)")
    return bed

# Runs before anything starts the session's bed: a machine holds one real node at a time, and
# this module starts (and stops) a bed of its own.
_FIRST = "test_testbed_lifecycle.py"


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: 0 if item.path.name == _FIRST else 1)
    _WANTS_MLFLOW[0] = any("mlflow_server" in getattr(item, "fixturenames", ()) for item in items)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that used the bed says where every component's log is."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _BED_LOGS and "bed" in getattr(item, "fixturenames", ()):
        lines = "\n".join(f"{name}: {path}" for name, path in _BED_LOGS[-1].items())
        report.sections.append(("test bed logs", lines))
