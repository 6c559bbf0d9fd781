"""Secrets in tenants' namespaces that the operator acts with on a tenant's behalf (its S3 keys
to list a trigger's prefix, its MongoDB URI for a database the platform does not serve).

A schedule or an evaluation is looked at every few seconds; its Secret is read from the API at
most once per ``ttl`` seconds, so a rotated Secret is used within that time.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .kube import Kube

S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MONGODB_KEY = "MONGODB_URI"


class MissingCredentials(Exception):
    """A namespace lacks the Secret (or a key of it) the operator must act with."""

    def __init__(self, namespace: str, name: str, keys: tuple[str, ...], why: str):
        super().__init__(f"Secret {namespace}/{name} ({why}; it must have the "
                         f"key{'s' if len(keys) > 1 else ''} {', '.join(keys)})")
        self.message = str(self)


class NamespaceSecrets:
    def __init__(self, kube: Callable[[], Kube], ttl: float = 30.0, size: int = 1024,
                 clock: Callable[[], float] = time.monotonic):
        self._kube = kube
        self.ttl, self.size, self._clock = ttl, size, clock
        self._read: OrderedDict[tuple[str, str], tuple[float, dict[str, str] | None]] = OrderedDict()
        self._lock = threading.Lock()

    def _secret(self, namespace: str, name: str) -> dict[str, str] | None:
        key, now = (namespace, name), self._clock()
        with self._lock:
            found = self._read.get(key)
        if found is not None and now - found[0] < self.ttl:
            return found[1]
        data = self._kube().read_secret(namespace, name)
        with self._lock:
            self._read[key] = (now, data)
            self._read.move_to_end(key)
            while len(self._read) > self.size:
                self._read.popitem(last=False)
        return data

    def values(self, namespace: str, name: str) -> dict[str, str] | None:
        """The namespace's Secret as read (at most ``ttl`` old); None when there is none."""
        return self._secret(namespace, name)

    def keys(self, namespace: str, name: str, keys: tuple[str, ...]) -> tuple[str, ...]:
        """The values of ``keys`` in the namespace's Secret; :class:`MissingCredentials` names
        what is missing."""
        data = self._secret(namespace, name)
        if data is None:
            raise MissingCredentials(namespace, name, keys, "not found")
        absent = [k for k in keys if not data.get(k)]
        if absent:
            raise MissingCredentials(namespace, name, keys, f"no {', '.join(absent)}")
        return tuple(data[k] for k in keys)
