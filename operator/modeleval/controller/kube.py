"""The operator's thin boundary to the Kubernetes API (RayClusters, Secrets, pods, events)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..api.crd import PLURAL
from ..api.spec import API_GROUP, API_VERSION

RAY = ("ray.io", "v1", "rayclusters")
# ModelEvaluations per list request (each may be as large as a spec may be).
LIST_PAGE = 10
# How much of the API server's message a refusal keeps (it can quote the refused object).
MAX_REFUSAL = 300
# Waiting reasons of a container that will not start by itself (ContainerCreating and
# PodInitializing are on their way).
STUCK = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
         "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
         "CrashLoopBackOff"}


def owned_by(owner_references: list[dict] | None, uid: str) -> bool:
    """Whether one of an object's owner references names ``uid`` (a name can be reused; a
    uid cannot)."""
    return bool(uid) and any(ref.get("uid") == uid for ref in owner_references or [])


class CreateRefused(Exception):
    """The API server refused to create an object for a reason a retry does not change (a 4xx
    other than 409 Conflict and 429 Too Many Requests: invalid, too large, forbidden)."""

    def __init__(self, what: str, error: ApiException):
        try:
            detail = json.loads(error.body or "{}").get("message") or ""
        except (ValueError, AttributeError):
            detail = ""
        self.status = error.status
        self.message = f"{what} was refused: HTTP {error.status} {error.reason}" + \
            (f": {detail[:MAX_REFUSAL]}" if detail else "")
        super().__init__(self.message)


def _refused_for_good(error: ApiException) -> bool:
    return error.status is not None and 400 <= error.status < 500 and error.status not in (409, 429)


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
            if _refused_for_good(error):
                raise CreateRefused(f"RayCluster {namespace}/{manifest['metadata']['name']}",
                                    error) from None
            raise _temporary(error, "create RayCluster") from None

    def delete_raycluster(self, namespace: str, name: str, owner_uid: str) -> bool:
        """Deletes the RayCluster only when ``owner_uid`` (an evaluation) owns it: a spec names
        clusters, and a tenant must not get the operator to delete one it could not itself.
        False when it is not that owner's (left alone); True when deleted or already gone."""
        obj = self.get_raycluster(namespace, name)
        if obj is None:
            return True
        meta = obj.get("metadata") or {}
        if not owned_by(meta.get("ownerReferences"), owner_uid):
            return False
        try:
            # The uid precondition: a same-named cluster made since the read is not deleted.
            self.custom.delete_namespaced_custom_object(
                *RAY[:2], namespace, RAY[2], name, propagation_policy="Background",
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=meta.get("uid"))))
        except ApiException as error:
            if error.status == 409:
                return False
            if error.status != 404:
                raise _temporary(error, f"delete RayCluster {namespace}/{name}") from None
        return True

    def ensure_network_policy(self, manifest: dict) -> bool:
        """Creates the policy; True when it exists and is the evaluation's own. False when a
        same-named policy someone else made holds the name: it is never adopted or changed (a
        tenant's own policy could open the Ray pods to anything)."""
        meta = manifest["metadata"]
        try:
            self.networking.create_namespaced_network_policy(meta["namespace"], manifest,
                                                             _preload_content=False)
            return True
        except ApiException as error:
            if _refused_for_good(error):
                raise CreateRefused(f"NetworkPolicy {meta['namespace']}/{meta['name']}",
                                    error) from None
            if error.status != 409:
                raise _temporary(error, "create NetworkPolicy") from None
        try:
            found = self.networking.read_namespaced_network_policy(meta["name"], meta["namespace"])
        except ApiException as error:
            raise _temporary(error, f"read NetworkPolicy {meta['namespace']}/{meta['name']}") from None
        owners = {ref.uid for ref in found.metadata.owner_references or []}
        return meta["ownerReferences"][0]["uid"] in owners

    def delete_network_policy(self, namespace: str, name: str, owner_uid: str) -> bool:
        """Deletes the NetworkPolicy only when ``owner_uid`` owns it (as for RayClusters): a
        same-named policy the operator did not make is the namespace's own."""
        try:
            policy = self.networking.read_namespaced_network_policy(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise _temporary(error, f"read NetworkPolicy {namespace}/{name}") from None
        meta = policy.metadata
        refs = [{"uid": ref.uid} for ref in meta.owner_references or []]
        if not owned_by(refs, owner_uid):
            return False
        try:
            self.networking.delete_namespaced_network_policy(
                name, namespace, body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(uid=meta.uid)))
        except ApiException as error:
            if error.status == 409:
                return False
            if error.status != 404:
                raise _temporary(error, f"delete NetworkPolicy {namespace}/{name}") from None
        return True

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
            if _refused_for_good(error):
                raise CreateRefused(f"ModelEvaluation {manifest['metadata']['namespace']}/"
                                    f"{manifest['metadata']['name']}", error) from None
            raise _temporary(error, "create ModelEvaluation") from None

    def list_evaluations(self, namespace: str, label_selector: str,
                         page: int = LIST_PAGE) -> Iterator[dict]:
        """The matching ModelEvaluations, read ``page`` at a time: a caller that keeps only a
        few fields of each holds one page of whole objects at most (a spec can be 1.4 MB)."""
        token = None
        while True:
            try:
                found = self.custom.list_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL, label_selector=label_selector,
                    limit=page, **({"_continue": token} if token else {}))
            except ApiException as error:
                raise _temporary(error, "list ModelEvaluations") from None
            yield from found.get("items") or []
            token = (found.get("metadata") or {}).get("continue")
            if not token:
                return


__all__ = ["CreateRefused", "Kube", "owned_by"]
