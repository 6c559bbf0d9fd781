"""The ModelEvaluation CRD, generated from the pydantic spec and status models.

`python -m modeleval.api.crd > crds/modelevaluations.modeleval.dev.yaml` writes it; a test fails
when the committed file differs from what the models generate. Pydantic's JSON schema becomes a
structural OpenAPI v3 schema: ``$ref`` inlined, ``anyOf [X, null]`` turned into ``nullable``,
titles and defaults dropped (the operator applies defaults with the same models, so the API
server never rewrites what a user applied). Cross-field rules that the schema alone cannot say
become CEL ``x-kubernetes-validations`` with messages naming the field.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from .spec import (API_GROUP, API_VERSION, CUTOFF_METRICS, KIND, METRICS_BY_TASK,
                   ModelEvaluationSpec)
from .status import ModelEvaluationStatus

PLURAL = "modelevaluations"
SINGULAR = "modelevaluation"
SHORT_NAMES = ["evaluations", "evaluation", "meval"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"

_DROP = {"title", "default", "examples", "$defs"}


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Pydantic JSON schema -> Kubernetes structural schema (recursive)."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(options) == 1:
            out = _structural({**options[0], **rest}, defs)
            if nullable:
                out["nullable"] = True
            return out
        raise ValueError(f"unsupported union in schema: {schema}")
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out \
            and out["additionalProperties"] is False:
        del out["additionalProperties"]  # structural schemas prune unknown fields already
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _schema(model: type, mode: str = "validation") -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode=mode)
    return _structural(raw, raw.get("$defs", {}))


def _metric_rules() -> list[dict[str, str]]:
    rules = []
    for task, allowed in sorted(METRICS_BY_TASK.items()):
        pattern = "^(" + "|".join(sorted(allowed)) + ")(@[0-9]+)?$"
        rules.append({
            "rule": f"self.task != '{task}' || self.metrics.all(m, m.matches('{pattern}'))",
            "message": f"spec.metrics: every metric must apply to task {task} "
                       f"({', '.join(sorted(allowed))})",
            "fieldPath": ".metrics",
        })
    no_cutoff = "|".join(sorted(set().union(*METRICS_BY_TASK.values()) - CUTOFF_METRICS))
    rules.append({
        "rule": f"self.metrics.all(m, !m.matches('^({no_cutoff})@'))",
        "message": f"spec.metrics: {no_cutoff.replace('|', ', ')} take no @k cut-off",
        "fieldPath": ".metrics",
    })
    return rules


SPEC_RULES = [
    *_metric_rules(),
    {"rule": "!has(self.gate) || self.gate.all(g, !has(g.maxRegression) || has(self.baseline))",
     "message": "spec.gate: maxRegression needs spec.baseline", "fieldPath": ".gate"},
    {"rule": "!has(self.gate) || self.gate.all(g, g.metric in self.metrics)",
     "message": "spec.gate: every gate metric must be listed in spec.metrics", "fieldPath": ".gate"},
    {"rule": "self.task != 'ranking' || !has(self.dataset.format) || self.dataset.format == 'letor' || "
             "(has(self.dataset.groupColumn) && self.dataset.groupColumn != '')",
     "message": "spec.dataset.groupColumn is required for ranking on parquet/csv data",
     "fieldPath": ".dataset.groupColumn"},
]
MODEL_RULES = [
    {"rule": "!has(self.format) || self.format != 'pickle' || "
             "(has(self.allowPickle) && self.allowPickle)",
     "message": "model.format pickle is refused unless model.allowPickle is true",
     "fieldPath": ".allowPickle"},
]
SLICE_RULES = [
    {"rule": "has(self.column) != has(self.feature)",
     "message": "slices: set exactly one of column or feature"},
    {"rule": "!has(self.feature) || has(self.buckets)",
     "message": "slices: a feature slice needs buckets", "fieldPath": ".buckets"},
]
GATE_RULES = [
    {"rule": "has(self.min) || has(self.max) || has(self.maxRegression)",
     "message": "gate: set min, max or maxRegression"},
]


def spec_schema() -> dict[str, Any]:
    schema = _schema(ModelEvaluationSpec)
    schema["x-kubernetes-validations"] = SPEC_RULES
    props = schema["properties"]
    props["model"]["x-kubernetes-validations"] = MODEL_RULES
    props["baseline"]["properties"]["model"]["x-kubernetes-validations"] = MODEL_RULES
    props["slices"]["items"]["x-kubernetes-validations"] = SLICE_RULES
    props["gate"]["items"]["x-kubernetes-validations"] = GATE_RULES
    return schema


def status_schema() -> dict[str, Any]:
    return _schema(ModelEvaluationStatus, mode="serialization")


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/part-of": "modeleval"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL,
                      "singular": SINGULAR, "shortNames": SHORT_NAMES, "categories": ["ml"]},
            "versions": [{
                "name": API_VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Model", "type": "string", "jsonPath": ".spec.model.uri"},
                    {"name": "Metric", "type": "string", "jsonPath": ".status.primaryMetric"},
                    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.percent"},
                    {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt",
                     "priority": 1},
                    {"name": "Reason", "type": "string", "jsonPath": ".status.reason",
                     "priority": 1},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "Evaluates a stored model on a stored dataset on Ray and "
                                   "records the metrics.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {**spec_schema(), "description": ModelEvaluationSpec.__doc__},
                        "status": {**status_schema(), "description": "Written by the operator."},
                    },
                }},
            }],
        },
    }


def render() -> str:
    header = "# Generated by `python -m modeleval.api.crd` from operator/modeleval/api; do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
