"""The operator's thin boundary to the Kubernetes API (RayClusters, Secrets, pods, events)."""

from __future__ import annotations

import base64

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..api.crd import PLURAL
from ..api.spec import API_GROUP, API_VERSION

RAY = ("ray.io", "v1", "rayclusters")
# Waiting reasons of a container that will not start by itself (ContainerCreating and
# PodInitializing are on their way).
STUCK = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
         "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
         "CrashLoopBackOff"}


def _temporary(error: ApiException, what: str) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"{what}: HTTP {error.status} {error.reason}", delay=5)


class Kube:
    def __init__(self, api: client.ApiClient):
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.networking = client.NetworkingV1Api(api)

    @classmethod
    def connect(cls) -> "Kube":
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        configuration = client.Configuration.get_default_copy()
        # One pooled connection per handler thread: a smaller pool drops connections under
        # load, and each new one costs a TLS handshake on both ends (the largest cost in a
        # profile of 100 evaluations created at once).
        configuration.connection_pool_maxsize = 64
        return cls(client.ApiClient(configuration))

    def get_raycluster(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(*RAY[:2], namespace, RAY[2], name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise _temporary(error, f"get RayCluster {namespace}/{name}") from None

    def create_raycluster(self, manifest: dict) -> bool:
        """Creates it; False when it exists already (a concurrent round created it)."""
        namespace = manifest["metadata"]["namespace"]
        try:
            self.custom.create_namespaced_custom_object(*RAY[:2], namespace, RAY[2], manifest,
                                                        _preload_content=False)
            return True
        except ApiException as error:
            if error.status == 409:
                return False
            raise _temporary(error, "create RayCluster") from None

    def delete_raycluster(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(*RAY[:2], namespace, RAY[2], name,
                                                        propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise _temporary(error, f"delete RayCluster {namespace}/{name}") from None

    def ensure_network_policy(self, manifest: dict) -> None:
        try:
            self.networking.create_namespaced_network_policy(manifest["metadata"]["namespace"], manifest,
                                                             _preload_content=False)
        except ApiException as error:
            if error.status != 409:
                raise _temporary(error, "create NetworkPolicy") from None

    def delete_network_policy(self, namespace: str, name: str) -> None:
        try:
            self.networking.delete_namespaced_network_policy(name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise _temporary(error, f"delete NetworkPolicy {namespace}/{name}") from None

    def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            raise _temporary(error, f"read Secret {namespace}/{name}") from None
        value = (secret.data or {}).get(key)
        if value is None:
            raise kopf.TemporaryError(f"Secret {namespace}/{name} has no key {key}", delay=5)
        return base64.b64decode(value).decode()

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's keys and values, decoded; None when there is no such Secret."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise _temporary(error, f"read Secret {namespace}/{name}") from None
        return {key: base64.b64decode(value).decode(errors="replace")
                for key, value in (secret.data or {}).items()}

    def pod_problems(self, namespace: str, cluster: str) -> list[tuple[str, str, str]]:
        """(pod, what, message) for each of the cluster's pods that cannot start: ``what`` is
        Unschedulable or the container's waiting reason (ErrImagePull, ImagePullBackOff,
        CreateContainerConfigError for a missing Secret, CrashLoopBackOff, ...)."""
        try:
            pods = self.core.list_namespaced_pod(namespace, label_selector=f"ray.io/cluster={cluster}").items
        except ApiException as error:
            raise _temporary(error, "list pods") from None
        found = []
        for pod in pods:
            status = pod.status
            if status is None:
                continue
            for condition in status.conditions or []:
                if condition.type == "PodScheduled" and condition.status == "False" \
                        and condition.reason == "Unschedulable":
                    found.append((pod.metadata.name, "Unschedulable", condition.message or "unschedulable"))
            for container in (status.init_container_statuses or []) + (status.container_statuses or []):
                waiting = container.state.waiting if container.state else None
                if waiting is not None and waiting.reason in STUCK:
                    found.append((pod.metadata.name, waiting.reason,
                                  f"container {container.name}: {waiting.message or waiting.reason}"))
        return found

    def delete_evaluation(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status != 404:
                raise _temporary(error, "delete ModelEvaluation") from None

    def create_evaluation(self, manifest: dict) -> bool:
        """Creates a ModelEvaluation; False when one of that name exists (made before)."""
        try:
            self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION,
                                                        manifest["metadata"]["namespace"], PLURAL,
                                                        manifest, _preload_content=False)
            return True
        except ApiException as error:
            if error.status == 409:
                return False
            raise _temporary(error, "create ModelEvaluation") from None

    def list_evaluations(self, namespace: str, label_selector: str) -> list[dict]:
        try:
            found = self.custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace,
                                                              PLURAL, label_selector=label_selector)
        except ApiException as error:
            raise _temporary(error, "list ModelEvaluations") from None
        return list(found.get("items") or [])


__all__ = ["Kube"]
