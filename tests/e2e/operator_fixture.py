"""The operator as a local process on the test bed, and helpers the operator e2e tests share."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import yaml
from kubernetes import client

from modeleval.demo import EXAMPLES_BUCKET
from testbed import Tools
from testbed.bed import free_port

from .kube import eventually, usable_namespace

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "modelevaluations.modeleval.dev.yaml"
EXAMPLES = ROOT / "examples"
EVALUATIONS = ("modeleval.dev", "v1alpha1", "modelevaluations")


def new_namespace(bed, api) -> str:
    """A fresh namespace, usable for pods, holding the examples' Secrets."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    usable_namespace(api, name)
    kubectl(bed, "apply", "-n", name, "-f", "-", input=(EXAMPLES / "secrets.yaml").read_text())
    return name


def kubectl(bed, *args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run([str(Tools.locate().kubectl), f"--kubeconfig={bed.kubeconfig}", *args],
                            input=input, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout if check else result.stdout + result.stderr


class OperatorProcess:
    """`python -m modeleval.controller` with the settings a chart would give it, plus the test
    bed's one seam (every head is the local Ray head)."""

    def __init__(self, bed, log_path: Path, kubeconfig: str | None = None, **settings: str):
        self.bed = bed
        self.log_path = log_path
        self.health_port, self.metrics_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": kubeconfig or bed.kubeconfig,
            "MODELEVAL_MONGODB_URI": bed.mongodb_uri,
            "MODELEVAL_RAY_HEAD_OVERRIDE_URL": bed.ray_dashboard,
            "MODELEVAL_RAY_HEAD_OVERRIDE_TOKEN": bed.ray_auth_token,
            "MODELEVAL_S3_ENDPOINT": bed.s3_endpoint,
            "MODELEVAL_METRICS_HOST": "127.0.0.1",
            "MODELEVAL_HEALTH_PORT": str(self.health_port),
            "MODELEVAL_METRICS_PORT": str(self.metrics_port),
            "MODELEVAL_POLL_INTERVAL": "1",
            "MODELEVAL_BACKOFF_BASE": "1",
            "MODELEVAL_PENDING_TIMEOUT": "20",
            **settings,
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> "OperatorProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "modeleval.controller"], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                        start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"operator exited: {self.log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"operator not healthy after 60s: {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()


def get_evaluation(api, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(*EVALUATIONS[:2], namespace,
                                                                       EVALUATIONS[2], name)


def gone(api, namespace: str, name: str) -> bool:
    """Whether the evaluation no longer exists (deleted and its finalizer removed)."""
    try:
        get_evaluation(api, namespace, name)
        return False
    except client.exceptions.ApiException as error:
        return error.status == 404


def wait_phase(api, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 240) -> dict:
    def probe():
        obj = get_evaluation(api, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    return eventually(probe, timeout, f"{namespace}/{name} to reach {phases}", interval=1)


def apply_manifest(bed, namespace: str, text: str) -> None:
    kubectl(bed, "apply", "-n", namespace, "-f", "-", input=text)


def spec_text(name: str, **spec) -> str:
    body = {"task": "ranking", "model": {"uri": f"s3://{EXAMPLES_BUCKET}/models/ranker.json"},
            "dataset": {"uri": f"s3://{EXAMPLES_BUCKET}/mslr/test.txt", "numFeatures": 136},
            "metrics": ["ndcg@10"], **spec}
    return yaml.safe_dump({"apiVersion": "modeleval.dev/v1alpha1", "kind": "ModelEvaluation",
                           "metadata": {"name": name}, "spec": body})


def events_of(api, namespace: str, name: str) -> list[str]:
    items = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}").items
    return [e.reason for e in sorted(items, key=lambda e: e.metadata.creation_timestamp)]
