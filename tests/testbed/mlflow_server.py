"""A real MLflow tracking server for the tests of the registry and tracking integration.

``mlflow server`` from PyPI, in a virtualenv of its own in the tools cache keyed by its pinned
versions (hack/versions.env MLFLOW_VERSION, MLFLOW_BOTO3_VERSION; never in the project's lock),
with a SQLite backend store, its artifacts served through the server into the bed's MinIO
(``--serve-artifacts --artifacts-destination s3://...``: clients need no S3 keys of their own),
and basic authentication on, so a tenant's credentials are what a request is served with.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .tools import read_versions, tools_dir

ADMIN_USER = "admin"
ARTIFACTS_BUCKET = "mlflow"


def venv_dir(versions: dict[str, str] | None = None) -> Path:
    pins = versions or read_versions()
    return tools_dir() / f"mlflow-{pins['MLFLOW_VERSION']}-boto3-{pins['MLFLOW_BOTO3_VERSION']}"


def ensure_installed(versions: dict[str, str] | None = None) -> Path:
    """The virtualenv's ``mlflow`` command, installed first when missing (uv, from PyPI; once
    per version, under a lock so two beds do not install it at once)."""
    pins = versions or read_versions()
    venv = venv_dir(pins)
    mlflow = venv / "bin" / "mlflow"
    if mlflow.exists():
        return mlflow
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".mlflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if mlflow.exists():
            return mlflow
        partial = venv.with_name(venv.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        uv = Path(sys.executable).with_name("uv")
        subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(partial)],
                       check=True, capture_output=True)
        subprocess.run([str(uv), "pip", "install", "-q", "--python", str(partial / "bin" / "python"),
                        f"mlflow[auth]=={pins['MLFLOW_VERSION']}",
                        f"boto3=={pins['MLFLOW_BOTO3_VERSION']}"], check=True)
        os.replace(partial, venv)  # console scripts name the interpreter's path: see below
    return mlflow


def server_argv(mlflow: Path, data: Path, host: str, port: int) -> list[str]:
    """The server's command line. The venv's scripts were written for the ``.partial`` path it
    was installed at, so the server runs as ``python -m mlflow`` of the venv's interpreter."""
    python = mlflow.parent / "python"
    return [str(python), "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", f"s3://{ARTIFACTS_BUCKET}/artifacts",
            "--host", host, "--port", str(port), "--workers", "1",
            # Pods and the operator reach it at the bridge's address, not only at localhost.
            "--allowed-hosts", "*"]


def server_env(data: Path, s3_endpoint: str, access_key: str, secret_key: str,
               admin_password: str, flask_secret: str) -> dict[str, str]:
    return {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_secret,
            "MLFLOW_AUTH_CONFIG_PATH": str(_auth_config(data)),
            # The jobs runner it starts by default serves nothing the tests use.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _auth_config(data: Path) -> Path:
    """basic-auth's settings: its user database beside the backend store; every user may
    manage the registered models (the tests' tenants set aliases on what the admin registered);
    a request without valid credentials is refused."""
    path = data / "basic_auth.ini"
    path.write_text("[mlflow]\ndefault_permission = MANAGE\n"
                    f"database_uri = sqlite:///{data / 'basic_auth.db'}\n"
                    f"admin_username = {ADMIN_USER}\nauthorization_function = "
                    "mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


def create_artifacts_bucket(s3_endpoint: str, access_key: str, secret_key: str) -> None:
    """The bucket the server writes artifacts to (it creates none itself)."""
    import boto3  # the project's own; the bed runs in its venv

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=access_key,
                      aws_secret_access_key=secret_key, region_name="us-east-1")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):  # a bed before this one's
        s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
