"""The spec check: a ModelEvaluation's spec as its models validate it, then as the operator's
policy (the chart's ``policy`` values) allows it; and the fields held to what the evaluation
was first seen with. Pure: the result is the spec, or an :class:`InvalidSpec` saying why."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from ..api.reasons import Reason
from ..api.registry import is_registry_uri
from ..api.spec import (ModelEvaluationSpec, ModelFormat, ModelSource, Resources,
                        format_validation_error, parse_quantity)
from ..api.status import ModelEvaluationStatus
from .settings import OperatorSettings, describe_toleration


@dataclass(frozen=True)
class InvalidSpec:
    """A spec that does not validate, or that the operator's policy refuses; the message names
    the field."""

    message: str
    reason: Reason = Reason.InvalidSpec
    # What is known of the cluster it may already hold (a spec edited, or a policy tightened,
    # after its cluster was made): whether that cluster is its own to delete.
    ray_cluster_name: str | None = None
    keep_cluster: bool = False
    pending_timeout_seconds: int | None = None


def parse_spec(raw: dict[str, Any], settings: OperatorSettings) -> ModelEvaluationSpec | InvalidSpec:
    try:
        spec = ModelEvaluationSpec.model_validate(raw)
    except ValidationError as error:
        shared, keep = raw.get("rayClusterName"), raw.get("keepCluster")
        return InvalidSpec(format_validation_error(error, "spec"),
                           ray_cluster_name=shared if isinstance(shared, str) and shared else None,
                           keep_cluster=keep is True)
    for where, model in spec.named_models():
        refused = model_refusal(where, model, settings)
        if refused:
            return InvalidSpec(refused[1], refused[0], spec.ray_cluster_name, spec.keep_cluster)
    for where, uri in spec.named_uris():
        if settings.refuse_file_uris and uri.startswith("file://"):
            return InvalidSpec(_FILE_REFUSED.format(where=where),
                               ray_cluster_name=spec.ray_cluster_name, keep_cluster=spec.keep_cluster)
    refused = policy_violation(spec, settings)
    if refused:
        return InvalidSpec(refused, Reason.Forbidden, spec.ray_cluster_name, spec.keep_cluster)
    return spec


_FILE_REFUSED = ("{where}: file:// URIs are refused in a cluster (pods cannot read the "
                 "submitter's files); use s3://")


def model_refusal(where: str, model: ModelSource,
                  settings: OperatorSettings) -> tuple[Reason, str] | None:
    """The one check of a model against the platform, for every model a spec names (the
    model, the baseline's, each challenger's; a schedule's champion and new models): why it is
    refused, or None. What holds everywhere (the URI's shape, no '..', a known format, pickle
    only with allowPickle) is ModelSource's own validation; this adds what the cluster rules:
    no file://, no pickle unless the platform allows it."""
    if settings.refuse_file_uris and model.uri.startswith("file://"):
        return Reason.InvalidSpec, _FILE_REFUSED.format(where=f"{where}.uri")
    if is_registry_uri(model.uri) and not settings.mlflow_tracking_uri:
        return Reason.RegistryNotConfigured, (f"{where}.uri: {model.uri} names a model in an "
                                              "MLflow registry and this operator has none "
                                              "(the chart's mlflow.trackingUri is not set); "
                                              "use an s3:// URI")
    if model.format == ModelFormat.pickle and not settings.allow_pickle:
        return Reason.Forbidden, (f"{where}.format: pickle models run code when loaded and this "
                                  "operator's policy refuses them (allowPickle: false); export "
                                  "to XGBoost JSON/UBJSON or ONNX")
    return None


def held_to_creation(spec: ModelEvaluationSpec | InvalidSpec, status: ModelEvaluationStatus
                     ) -> ModelEvaluationSpec | InvalidSpec:
    """The spec, or an InvalidSpec when its rayClusterName or keepCluster differ from what the
    evaluation was first seen with (the CRD refuses such an edit; this holds even where the
    CRD's rule is missing). Whose cluster is deleted must not follow a later edit."""
    fixed = status.cluster_fields
    if fixed is None:
        return spec
    if isinstance(spec, InvalidSpec):
        return replace(spec, ray_cluster_name=fixed.ray_cluster_name,
                       keep_cluster=fixed.keep_cluster)
    for name, now, then in (("rayClusterName", spec.ray_cluster_name, fixed.ray_cluster_name),
                            ("keepCluster", spec.keep_cluster, fixed.keep_cluster)):
        if now != then:
            return InvalidSpec(f"spec.{name}: cannot change after creation (was {then!r}, now "
                               f"{now!r})", ray_cluster_name=fixed.ray_cluster_name,
                               keep_cluster=fixed.keep_cluster)
    return spec


def _image_allowed(image: str, allowed: list[str]) -> bool:
    return any(image == pattern or (pattern.endswith("*") and image.startswith(pattern[:-1]))
               for pattern in allowed)


def policy_violation(spec: ModelEvaluationSpec, settings: OperatorSettings) -> str | None:
    """What the spec asks for beyond the operator's policy (the chart's ``policy`` values), or
    None. Tenants may create evaluations; only the platform decides what they may run."""
    images = settings.allowed_ray_images or [settings.ray_image]
    if spec.ray_image and not _image_allowed(spec.ray_image, images):
        return (f"spec.rayImage: {spec.ray_image} is not an allowed Ray image (operator policy "
                f"allowedRayImages: {', '.join(images)})")
    if spec.events is not None and spec.events.sinks and not settings.allow_object_event_sinks:
        return ("spec.events.sinks: this operator sends events only to the platform's sinks "
                "(operator policy events.allowObjectSinks: false)")
    return _resources_violation(spec.resources, settings) or _placement_violation(spec, settings)


def _resources_violation(resources: Resources, settings: OperatorSettings) -> str | None:
    if settings.max_workers and resources.workers > settings.max_workers:
        return (f"spec.resources.workers: {resources.workers} is above the operator's limit "
                f"(maxWorkers: {settings.max_workers})")
    if settings.max_gpus and resources.workers * resources.gpu > settings.max_gpus:
        return (f"spec.resources.gpu: {resources.workers} worker(s) x {resources.gpu} GPU(s) is "
                f"above the operator's limit (maxGpus: {settings.max_gpus} per evaluation)")
    for setting, limit, asked in (
            ("maxWorkerMemory", settings.max_worker_memory,
             (("spec.resources.memory", resources.memory),
              ("spec.resources.headMemory", resources.head_memory))),
            ("maxWorkerCpu", settings.max_worker_cpu,
             (("spec.resources.cpu", resources.cpu),
              ("spec.resources.headCpu", resources.head_cpu)))):
        for name, value in asked if limit else ():
            if parse_quantity(value) > parse_quantity(limit):
                return f"{name}: {value} is above the operator's limit ({setting}: {limit})"
    return None


def _placement_violation(spec: ModelEvaluationSpec, settings: OperatorSettings) -> str | None:
    """Tolerations and node labels let pods onto nodes their taints keep for others (GPU,
    dedicated, system nodes): only those the platform lists are accepted."""
    for index, toleration in enumerate(spec.tolerations):
        if not any(allowed.admits(toleration) for allowed in settings.allowed_tolerations):
            listed = "; ".join(map(describe_toleration, settings.allowed_tolerations)) or "none"
            return (f"spec.tolerations[{index}]: {describe_toleration(toleration)} is not allowed by the "
                    f"operator's policy (allowedTolerations: {listed})")
    for key, value in spec.node_selector.items():
        values = settings.allowed_node_selectors.get(key)
        if values is None or ("*" not in values and value not in values):
            listed = ", ".join(f"{k}={'|'.join(v)}" for k, v in
                               sorted(settings.allowed_node_selectors.items())) or "none"
            return (f"spec.nodeSelector.{key}: {key}={value} is not allowed by the operator's "
                    f"policy (allowedNodeSelectors: {listed})")
    return None

