"""Small helpers the e2e tests share for talking to the test bed's API server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from kubernetes import client, config

T = TypeVar("T")


def api_client(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


def eventually(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Polls ``probe`` until it returns something truthy; fails naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def usable_namespace(api: client.ApiClient, name: str, timeout: float = 60) -> str:
    """Waits until the controller manager gave ``name`` its "default" ServiceAccount: until then
    every pod in it is refused, so a RayCluster made at once would fail to create its pods (seen
    right after an API server restart, when the controller manager's watches were catching up)."""
    core = client.CoreV1Api(api)

    def has_default_account() -> bool:
        return bool(core.list_namespaced_service_account(name, field_selector="metadata.name=default").items)

    eventually(has_default_account, timeout, f"namespace {name}'s default ServiceAccount", interval=0.2)
    return name
