"""The EvaluationSchedule's hands and eyes: lists its children (by label) and the trigger's S3
prefix, creates and deletes children, posts Events. Nothing here chooses anything
(:mod:`.schedule` does).

S3 is read with the operator's own credentials (the standard AWS variables, which the chart
fills from ``s3.operatorSecretName``) at the operator's ``s3_endpoint``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timezone
from typing import Any

import boto3
import kopf
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..api.reasons import Reason
from ..api.schedule import SCHEDULE_LABEL, EvaluationScheduleSpec, EvaluationScheduleStatus
from .decide import Emit, InvalidSpec
from .kube import Kube
from .schedule import (Child, CreateChild, DeleteChild, ModelObject, Schedule, ScheduleAction,
                       ScheduleObserved, wants_models)
from .settings import OperatorSettings
from .status import cap

log = logging.getLogger("modeleval.operator")
# A prefix with more objects than this is listed only this far (in key order), per round.
MAX_LISTED = 10_000


def split_prefix(prefix: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> (``bucket``, ``a/b/``)."""
    bucket, _, key = prefix[len("s3://"):].partition("/")
    return bucket, key


class ScheduleRuntime:
    def __init__(self, settings: OperatorSettings, kube: Callable[[], Kube]):
        self.settings = settings
        self._kube = kube
        self._s3: Any = None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = boto3.client("s3", endpoint_url=self.settings.s3_endpoint or None,
                                    config=Config(connect_timeout=5, read_timeout=10,
                                                  retries={"max_attempts": 2}))
        return self._s3

    # ------------------------------------------------------------------------- observe
    def observe(self, sched: Schedule, spec: EvaluationScheduleSpec | InvalidSpec,
                status: EvaluationScheduleStatus) -> ScheduleObserved:
        if isinstance(spec, InvalidSpec):
            return ScheduleObserved()
        items = self._kube().list_evaluations(sched.namespace, f"{SCHEDULE_LABEL}={sched.name}")
        # Only this schedule's own children (a label can be copied; an owner uid cannot).
        children = tuple(Child.of(obj) for obj in items if any(
            ref.get("uid") == sched.uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or []))
        if not wants_models(spec, status):
            return ScheduleObserved(children=children)
        bucket, prefix = split_prefix(spec.trigger.new_model.prefix)
        try:
            models = self.list_models(bucket, prefix)
        except (ClientError, BotoCoreError) as error:
            return ScheduleObserved(children=children, bucket=bucket, models_error=cap(
                f"cannot list {spec.trigger.new_model.prefix}: {error}", 512))
        return ScheduleObserved(children=children, models=models, bucket=bucket)

    def list_models(self, bucket: str, prefix: str) -> tuple[ModelObject, ...]:
        found = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
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
    def act(self, body: kopf.Body, sched: Schedule, actions: list[ScheduleAction]) -> None:
        kube = self._kube()
        for action in actions:
            match action:
                case CreateChild(manifest=manifest, message=message):
                    if kube.create_evaluation(manifest):
                        kopf.info(body, reason=Reason.RunCreated, message=cap(message))
                case DeleteChild(name=name, why=why):
                    kube.delete_evaluation(sched.namespace, name)
                    log.info("deleted %s/%s: %s", sched.namespace, name, why)
                case Emit(reason=reason, message=message, warning=warning):
                    (kopf.warn if warning else kopf.info)(body, reason=reason, message=cap(message))
