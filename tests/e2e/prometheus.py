"""A real Prometheus (Debian's package) scraping the operator once a second, for the e2e tests
that ask it what the Grafana dashboard's panels would show. It runs from a temporary directory
(config and TSDB) on a loopback port, and is killed with the test process that started it
(PR_SET_PDEATHSIG), so a killed test run leaves no Prometheus behind."""

from __future__ import annotations

import ctypes
import json
import math
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from testbed.bed import free_port

BINARY = "/usr/bin/prometheus"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Prometheus:
    def __init__(self, directory: Path, targets: list[str], binary: str = BINARY):
        self.directory = directory
        self.targets = targets
        self.binary = shutil.which(binary) or binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def start(self, timeout: float = 30) -> "Prometheus":
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "modeleval-operator",
                                "static_configs": [{"targets": self.targets}]}]}))
        log = open(self.directory / "prometheus.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2h",
             "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.directory,
            preexec_fn=_die_with_parent)
        self.started = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited: {self.log()}"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout}s: {self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        path = self.directory / "prometheus.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as error:  # a bad query: Prometheus says why
            raise AssertionError(f"{url}: {error.read().decode(errors='replace')}") from error
        assert body["status"] == "success", body
        return body["data"]

    def query_range(self, expr: str, start: float, end: float, step: int = 2) -> list[dict]:
        """The series of a range query (what a Grafana time series panel draws)."""
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                        step=f"{step}s")["result"]

    def targets_up(self) -> list[dict]:
        return [t for t in self.api("targets")["activeTargets"] if t["health"] == "up"]


def positive_values(series: list[dict]) -> list[float]:
    """The finite values above zero in a range query's result."""
    values = (float(v) for s in series for _, v in s["values"])
    return [v for v in values if math.isfinite(v) and v > 0]
