"""The EvaluationSchedule's hands and eyes: lists its children (by label) and the trigger's S3
prefix or registered model's versions, creates and deletes children, posts Events. Nothing here
chooses anything (:mod:`.schedule` does).

S3 is listed with the schedule namespace's own Secret (``s3_secret``, the one its evaluations'
Ray pods get) at the operator's ``s3_endpoint``, never with the operator's credentials: a
tenant's trigger sees exactly what the tenant's evaluations could read. Every refusal reads the
same, so a tenant learns nothing about buckets it may not list. A registered model's versions
are listed the same way, with the namespace's own MLflow credentials (``mlflow_secret``). A
prefix or model is listed at most once a minute (``trigger_list_interval``, jittered) for every schedule naming it with the same
credentials.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import kopf
from botocore.exceptions import BotoCoreError, ClientError

from ..api.reasons import Reason
from ..api.schedule import SCHEDULE_LABEL, EvaluationScheduleSpec, EvaluationScheduleStatus
from .actions import Emit
from .observed import ObjectIdentity
from .policy import InvalidSpec
from .kube import CreateRefused, Kube
from .mlflow import NO_SERVER, Registries, RegistryError, namespace_credentials
from .schedule import (Child, CreateChild, DeleteChild, ModelObject, ScheduleAction,
                       ScheduleObserved, wants_models)
from .s3 import s3_client as _s3_client
from .secrets import S3_KEYS, MissingCredentials, NamespaceSecrets
from .settings import OperatorSettings
from .status import cap

log = logging.getLogger("modeleval.operator")
# A prefix with more objects than this is listed only this far (in key order), per round.
MAX_LISTED = 10_000
# A prefix is listed at most once per interval (settings.trigger_list_interval), each time up to
# LIST_JITTER of it later, so schedules made together do not list together.
LIST_JITTER = 0.25
MAX_S3_CLIENTS = 32
# What a listing gives a round: the objects, or why there are none.
Listing = tuple["tuple[ModelObject, ...] | None", "str | None"]
# (endpoint, bucket, prefix, hash of the credentials): schedules sharing one share a listing.
ListingKey = tuple[str, str, str, str]


def split_prefix(prefix: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> (``bucket``, ``a/b/``)."""
    bucket, _, key = prefix[len("s3://"):].partition("/")
    return bucket, key


@dataclass
class _CachedListing:
    lock: threading.Lock = field(default_factory=threading.Lock)
    due: float = float("-inf")
    used: float = 0.0
    listing: Listing = (None, None)


class PrefixListings:
    """The last listing of each (endpoint, bucket, prefix, credentials), reused until it is due
    again; one no schedule asked for in two intervals is forgotten, and the least recently used
    beyond ``size`` too."""

    def __init__(self, interval: float = 60.0, jitter: float = LIST_JITTER,
                 size: int = 512, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random):
        self.interval, self.jitter, self.size = interval, jitter, size
        self._clock, self._rng = clock, rng
        self._entries: OrderedDict[ListingKey, _CachedListing] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, key: ListingKey) -> _CachedListing:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _CachedListing()
            entry.used = now
            self._entries.move_to_end(key)
            while len(self._entries) > self.size or \
                    next(iter(self._entries.values())).used < now - 2 * self.interval:
                self._entries.popitem(last=False)
            return entry

    def get(self, key: ListingKey, list_now: Callable[[], Listing]) -> Listing:
        entry = self._entry(key)
        with entry.lock:  # a second schedule on the same key waits for this listing
            now = self._clock()
            if now >= entry.due:
                entry.listing = list_now()
                entry.due = now + self.interval * (1 + self.jitter * self._rng())
            return entry.listing


def version_object(name: str, version: dict) -> ModelObject:
    """A registered version as the trigger compares it: keyed by its URI, told from a version
    of the same number in a model deleted and registered again by its creation time."""
    created = int(version.get("creation_timestamp") or 0)
    return ModelObject(key=f"models:/{name}/{version['version']}", etag=str(created),
                       last_modified=datetime.fromtimestamp(created // 1000, timezone.utc))


class ScheduleRuntime:
    def __init__(self, settings: OperatorSettings, kube: Callable[[], Kube],
                 s3_client: Callable[[str | None, str, str], Any] = _s3_client,
                 listings: PrefixListings | None = None, secrets: NamespaceSecrets | None = None,
                 registries: Registries | None = None):
        self.settings = settings
        self._kube = kube
        self._make_s3 = s3_client
        self.listings = listings or PrefixListings(settings.trigger_list_interval)
        self.secrets = secrets or NamespaceSecrets(kube)
        self.registries = registries or Registries(settings, self.secrets)
        self._clients: OrderedDict[str, Any] = OrderedDict()
        self._clients_lock = threading.Lock()

    def s3_client(self, key_id: str, secret: str) -> Any:
        """One client per credentials, reused (each holds botocore's service model); the least
        recently used beyond MAX_S3_CLIENTS are dropped."""
        key = hashlib.sha256(f"{key_id}\0{secret}".encode()).hexdigest()
        with self._clients_lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._make_s3(self.settings.s3_endpoint, key_id, secret)
            self._clients.move_to_end(key)
            while len(self._clients) > MAX_S3_CLIENTS:
                self._clients.popitem(last=False)
            return client

    # ------------------------------------------------------------------------- observe
    def observe(self, sched: ObjectIdentity, spec: EvaluationScheduleSpec | InvalidSpec,
                status: EvaluationScheduleStatus, older_schedules: int = 0) -> ScheduleObserved:
        if isinstance(spec, InvalidSpec):
            return ScheduleObserved()
        children = self.children(sched)
        if not wants_models(spec, status):
            return ScheduleObserved(children=children, older_schedules=older_schedules)
        trigger = spec.trigger.new_model
        if trigger.registered_model is not None:
            models, error = self.versions(sched.namespace, trigger.registered_model)
            bucket = None
        else:
            models, error = self.models(sched.namespace, trigger.prefix)
            bucket = split_prefix(trigger.prefix)[0]
        return ScheduleObserved(children=children, models=models, bucket=bucket,
                                models_error=None if error is None else cap(error, 512),
                                older_schedules=older_schedules)

    def children(self, sched: ObjectIdentity) -> tuple[Child, ...]:
        """What a round needs of each child, taken page by page: a child's spec (a copy of the
        template, up to 1.4 MB) is never kept. Only this schedule's own children count (a label
        can be copied; an owner uid cannot)."""
        items = self._kube().list_evaluations(sched.namespace, f"{SCHEDULE_LABEL}={sched.name}")
        return tuple(Child.of(obj) for obj in items if any(
            ref.get("uid") == sched.uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or []))

    def models(self, namespace: str, uri: str) -> Listing:
        """The objects under ``uri`` as the namespace's own S3 credentials list them."""
        name = self.settings.s3_secret
        try:
            key_id, secret = self.secrets.keys(namespace, name, S3_KEYS)
        except MissingCredentials as error:
            return None, (f"cannot list {uri}: a new-model trigger lists S3 with its namespace's "
                          f"own credentials, from {error.message}")
        bucket, prefix = split_prefix(uri)
        credentials = hashlib.sha256(f"{key_id}\0{secret}".encode()).hexdigest()
        key = (self.settings.s3_endpoint or "", bucket, prefix, credentials)
        return self.listings.get(key, lambda: self._list(uri, f"{namespace}/{name}", key_id, secret))

    def versions(self, namespace: str, name: str) -> Listing:
        """The registered model's versions as the namespace's own MLflow credentials see them,
        listed at most once per interval for every schedule naming it with those credentials."""
        uri = f"models:/{name}"
        if not self.settings.mlflow_tracking_uri:
            return None, f"cannot list the versions of {uri}: {NO_SERVER}"
        try:
            credentials = namespace_credentials(self.secrets, namespace,
                                                self.settings.mlflow_secret)
        except RegistryError as error:
            return None, f"cannot list the versions of {uri}: {error.message}"
        key = (self.settings.mlflow_tracking_uri or "", uri, "", credentials.digest())
        return self.listings.get(key, lambda: self._list_versions(namespace, name))

    def _list_versions(self, namespace: str, name: str) -> Listing:
        uri = f"models:/{name}"
        try:
            registry = self.registries.open(namespace)
        except RegistryError as error:
            return None, f"cannot list the versions of {uri}: {error.message}"
        try:
            found = registry.model_versions(name, MAX_LISTED)
        except RegistryError as error:
            log.info("listing the versions of %s for %s: %s", uri, namespace, error.message)
            return None, f"cannot list the versions of {uri}: {error.message}"
        finally:
            registry.close()
        return tuple(version_object(name, version) for version in found
                     if version.get("version")), None

    def _list(self, uri: str, secret_name: str, key_id: str, secret: str) -> Listing:
        bucket, prefix = split_prefix(uri)
        try:
            return self.list_models(self.s3_client(key_id, secret), bucket, prefix), None
        except ClientError as error:
            log.info("listing %s with Secret %s: %s", uri, secret_name, error)
            if int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400) < 500:
                # NoSuchBucket and AccessDenied read the same: whether a bucket the tenant may
                # not list exists is not the tenant's to learn.
                return None, (f"cannot list {uri} with the credentials of Secret {secret_name}: "
                              "the bucket does not exist or they may not list it")
        except BotoCoreError as error:
            log.warning("listing %s with Secret %s: %s", uri, secret_name, error)
        return None, f"cannot list {uri}: S3 did not answer (the operator's log has the details)"

    @staticmethod
    def list_models(s3: Any, bucket: str, prefix: str) -> tuple[ModelObject, ...]:
        found = []
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents") or []:
                if item["Key"].endswith("/"):
                    continue  # a folder marker, not a model
                found.append(ModelObject(key=item["Key"], etag=item.get("ETag", "").strip('"'),
                                         last_modified=item["LastModified"].astimezone(timezone.utc)
                                         .replace(microsecond=0)))
                if len(found) >= MAX_LISTED:
                    return tuple(found)
        return tuple(found)

    # ------------------------------------------------------------------------- act
    def act(self, body: kopf.Body, sched: ObjectIdentity, actions: list[ScheduleAction]) -> list[str]:
        """Does what the round decided; the children the API server refused to create, why."""
        kube = self._kube()
        refused = []
        for action in actions:
            match action:
                case CreateChild(manifest=manifest, message=message):
                    try:
                        if kube.create_evaluation(manifest):
                            kopf.info(body, reason=Reason.RunCreated, message=cap(message))
                    except CreateRefused as error:  # a retry would be refused the same way
                        refused.append(cap(error.message))
                        kopf.warn(body, reason=Reason.CreateRefused, message=cap(error.message))
                case DeleteChild(name=name, why=why):
                    kube.delete_evaluation(sched.namespace, name)
                    log.info("deleted %s/%s: %s", sched.namespace, name, why)
                case Emit(reason=reason, message=message, warning=warning):
                    (kopf.warn if warning else kopf.info)(body, reason=reason, message=cap(message))
        return refused
