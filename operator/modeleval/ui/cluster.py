"""What the dashboard reads from Kubernetes with the user's kubeconfig, read-only: each
evaluation's live phase and a schedule's degradation rule. Anything that fails (no cluster, no
permission, a bad kubeconfig) becomes a reason shown beside the row, never an error page.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from ..api.crd import PLURAL
from ..api.schedule import SCHEDULE_PLURAL, Degradation
from ..api.spec import API_GROUP, API_VERSION

TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class LivePhase:
    phase: str | None
    unknown_because: str | None = None


@dataclass
class Phases:
    """The phases the user may see: by uid; ``refused`` says why a namespace's are unknown."""

    by_uid: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    everywhere: str | None = None  # why no phase at all is known

    def of(self, uid: str, namespace: str | None) -> LivePhase:
        if uid in self.by_uid:
            return LivePhase(self.by_uid[uid])
        why = self.everywhere or self.refused.get(namespace or "")
        return LivePhase(None, why or "no such ModelEvaluation in the cluster (deleted)")


@dataclass(frozen=True)
class ScheduleRule:
    """A schedule's degradation rule and watched metric, or why they are unknown."""

    degradation: Degradation | None = None
    metric: str | None = None
    unknown_because: str | None = None
    source: str = "the EvaluationSchedule's spec"


def _why(error: Exception) -> str:
    status = getattr(error, "status", None)
    if status == 403:
        return "forbidden: your credentials may not list ModelEvaluations here"
    if status:
        return f"the API server answered {status} {getattr(error, 'reason', '')}".strip()
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


class ClusterView:
    def __init__(self, kubeconfig: Path | None, cache_seconds: float = 10.0):
        """``kubeconfig`` None: the pod's own ServiceAccount (in-cluster config)."""
        self.kubeconfig = Path(kubeconfig) if kubeconfig is not None else None
        self.cache_seconds = cache_seconds
        self._api: Any = None
        self._held: dict[str, tuple[float, dict[str, str] | str]] = {}
        self._lock = threading.Lock()

    def _objects(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            if self.kubeconfig is None:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api_client = client.ApiClient(configuration)
            else:
                api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
            self._api = client.CustomObjectsApi(api_client)
        return self._api

    def _listed(self, namespace: str | None) -> dict[str, str] | str:
        """uid -> phase of the evaluations in ``namespace`` (None: every namespace), or why
        they could not be listed; reused for ``cache_seconds``."""
        key = namespace or ""
        with self._lock:
            held = self._held.get(key)
            if held and time.monotonic() - held[0] < self.cache_seconds:
                return held[1]
        try:
            api = self._objects()
            if namespace is None:
                found = api.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL,
                                                       _request_timeout=TIMEOUT_SECONDS)
            else:
                found = api.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace,
                                                          PLURAL, _request_timeout=TIMEOUT_SECONDS)
            answer: dict[str, str] | str = {
                item["metadata"]["uid"]: (item.get("status") or {}).get("phase") or "Pending"
                for item in found.get("items", [])}
        except Exception as error:  # noqa: BLE001 - any failure is shown, never raised
            answer = _why(error)
        with self._lock:
            self._held[key] = (time.monotonic(), answer)
        return answer

    def phases(self, namespaces: Iterable[str | None]) -> Phases:
        """Every namespace at once when the user may list them all, else each asked one."""
        everywhere = self._listed(None)
        if isinstance(everywhere, dict):
            return Phases(by_uid=everywhere)
        phases = Phases()
        for namespace in sorted({n for n in namespaces if n}):
            listed = self._listed(namespace)
            if isinstance(listed, dict):
                phases.by_uid.update(listed)
            else:
                phases.refused[namespace] = listed
        if not phases.by_uid and not phases.refused:
            phases.everywhere = everywhere
        elif "forbidden" not in everywhere:  # the cluster itself failed, not a permission
            phases.everywhere = everywhere
        return phases

    def schedule_rule(self, namespace: str, name: str) -> ScheduleRule:
        try:
            body = self._objects().get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, SCHEDULE_PLURAL, name,
                _request_timeout=TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001 - shown beside the chart
            return ScheduleRule(unknown_because=_why(error))
        spec, status = body.get("spec") or {}, body.get("status") or {}
        try:
            degradation = Degradation.model_validate(spec["degradation"]) \
                if spec.get("degradation") else None
        except ValidationError as error:
            return ScheduleRule(unknown_because=f"its spec.degradation is not valid: "
                                f"{error.errors()[0]['msg']}")
        metric = (degradation.metric if degradation else None) or status.get("metricName")
        return ScheduleRule(degradation, metric)
