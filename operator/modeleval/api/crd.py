"""The ModelEvaluation CRD, generated from the pydantic spec and status models.

`python -m modeleval.api.crd > crds/modelevaluations.modeleval.dev.yaml` writes it; a test fails
when the committed file differs from what the models generate. Pydantic's JSON schema becomes a
structural OpenAPI v3 schema: ``$ref`` inlined, ``anyOf [X, null]`` turned into ``nullable``,
titles and defaults dropped (the operator applies defaults with the same models, so the API
server never rewrites what a user applied), constrained map keys (``patternProperties``,
``propertyNames``, which structural schemas lack) turned into a CEL rule on the map. The rules
the schema alone cannot say are declared in api/spec.py next to the fields they check (each a
CEL rule and the same check in Python); they arrive here inside the JSON schema as
``x-kubernetes-validations`` and pass through unchanged, so nothing in this module restates them.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from .spec import (API_GROUP, API_VERSION, CEL_RULES, KIND, ModelEvaluationSpec, ObjectMeta,
                   cel_string, transition_rules)
from .schedule import (SCHEDULE_KIND, SCHEDULE_NAME_MAX, SCHEDULE_PLURAL, SCHEDULE_SHORT_NAMES,
                       SCHEDULE_SINGULAR, EvaluationScheduleSpec, EvaluationScheduleStatus)
from .status import ModelEvaluationStatus

PLURAL = "modelevaluations"
SINGULAR = "modelevaluation"
SHORT_NAMES = ["evaluations", "evaluation", "meval"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"

_DROP = {"title", "default", "examples", "$defs"}
_EXCLUSIVE = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}

# What `kubectl explain` says of the fields every object has (the Kubernetes API's own wording).
_API_VERSION = ("APIVersion defines the versioned schema of this representation of an object. "
                "Servers should convert recognized schemas to the latest internal value, and may "
                "reject unrecognized values.")
_KIND = ("Kind is a string value representing the REST resource this object represents. Servers "
         "may infer this from the endpoint the client submits requests to. In CamelCase.")


def _key_rule(pattern: str, names: dict[str, Any]) -> dict[str, str]:
    """The CEL for a map whose keys pydantic constrains (patternProperties/propertyNames)."""
    checks = [f"k.matches({cel_string(pattern)})"]
    if "maxLength" in names:
        checks.insert(0, f"k.size() <= {names['maxLength']}")
    what = names.get("description", f"match {pattern}")
    return {"rule": f"self.all(k, {' && '.join(checks)})",
            "message": f"every key must be {what}, at most {names.get('maxLength')} characters"}


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
    if "patternProperties" in schema:
        ((pattern, values),) = schema["patternProperties"].items()
        names = schema.get("propertyNames", {})
        rest = {k: v for k, v in schema.items() if k not in ("patternProperties", "propertyNames")}
        rest[CEL_RULES] = [*rest.get(CEL_RULES, []), _key_rule(pattern, names)]
        return _structural({**rest, "additionalProperties": values}, defs)
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
        elif key in _EXCLUSIVE and not isinstance(value, bool):
            # JSON Schema's exclusive bound is a number (pydantic's gt/lt); OpenAPI v3's, which
            # the API server reads, is a flag on minimum/maximum (a number there is refused).
            out[_EXCLUSIVE[key]], out[key] = value, True
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


def metadata_schema() -> dict[str, Any]:
    """metadata.name as ObjectMeta declares it. The API server alone checks a name as a DNS
    subdomain (253 characters, dots), but the name also becomes the RayCluster's, its Services'
    and label values: a DNS label of 63 at most. name is the one metadata field a CRD may
    restrict."""
    name = ObjectMeta.model_json_schema()["properties"]["name"]
    # No description here: the API server refuses a CRD whose metadata schema says more than
    # name's type and bounds ("must not specify anything other than name and generateName");
    # kubectl explain describes metadata from ObjectMeta itself.
    return {"type": "object", "properties": {"name": {
        k: name[k] for k in ("type", "maxLength", "pattern")}}}


def spec_schema() -> dict[str, Any]:
    return _schema(ModelEvaluationSpec)


def status_schema() -> dict[str, Any]:
    return _schema(ModelEvaluationStatus, mode="serialization")


def _definition(kind: str, plural: str, singular: str, short_names: list[str],
                columns: list[dict[str, Any]], description: str, metadata: dict[str, Any],
                spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """A CRD of this group: one served and stored version with a status subresource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "modeleval"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": singular, "shortNames": short_names, "categories": ["ml"]},
            "versions": [{
                "name": API_VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": description,
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string", "description": _API_VERSION},
                        "kind": {"type": "string", "description": _KIND},
                        "metadata": metadata,
                        "spec": spec,
                        "status": {**status, "description": "Written by the operator."},
                    },
                }},
            }],
        },
    }


def crd() -> dict[str, Any]:
    return _definition(
        KIND, PLURAL, SINGULAR, SHORT_NAMES, [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Model", "type": "string", "jsonPath": ".spec.model.uri"},
            {"name": "Metric", "type": "string", "jsonPath": ".status.primaryMetric"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress.percent"},
            {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt", "priority": 1},
            {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
            {"name": "Report", "type": "string", "jsonPath": ".status.reportURI", "priority": 1},
            {"name": "Drift", "type": "number", "jsonPath": ".status.drift.driftedShare",
             "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        "Evaluates a stored model on a stored dataset on Ray and records the metrics.",
        metadata_schema(), _fixed_after_creation(
            {**spec_schema(), "description": ModelEvaluationSpec.__doc__}),
        status_schema())


def _fixed_after_creation(spec: dict[str, Any]) -> dict[str, Any]:
    """A ModelEvaluation's spec with the transition rules (not a schedule's template)."""
    return {**spec, CEL_RULES: [*spec.get(CEL_RULES, []), *transition_rules()]}


def schedule_crd() -> dict[str, Any]:
    """The EvaluationSchedule CRD: its template is a ModelEvaluation spec, with the same schema
    and rules as the ModelEvaluation CRD's."""
    metadata = metadata_schema()
    # Short enough that its children's names (this name and a suffix) are DNS labels too.
    metadata["properties"]["name"].update(maxLength=SCHEDULE_NAME_MAX)
    return _definition(
        SCHEDULE_KIND, SCHEDULE_PLURAL, SCHEDULE_SINGULAR, SCHEDULE_SHORT_NAMES, [
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend", "priority": 1},
            {"name": "Last Run", "type": "string", "jsonPath": ".status.lastRun"},
            {"name": "Last Metric", "type": "number", "jsonPath": ".status.lastPrimaryMetric"},
            {"name": "Change", "type": "number", "jsonPath": ".status.metricChange"},
            {"name": "Degraded", "type": "string",
             "jsonPath": '.status.conditions[?(@.type=="Degraded")].status'},
            {"name": "Drifted", "type": "string",
             "jsonPath": '.status.conditions[?(@.type=="DataDrift")].status'},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        "Creates ModelEvaluations on a schedule and for new models, and tracks their primary "
        "metric.", metadata,
        {**_schema(EvaluationScheduleSpec), "description": EvaluationScheduleSpec.__doc__},
        _schema(EvaluationScheduleStatus, mode="serialization"))


def cel_rules(node: Any = None) -> list[dict[str, str]]:
    """Every x-kubernetes-validations rule in the CRD (or in ``node``), in schema order."""
    node = crd() if node is None else node
    if isinstance(node, dict):
        return [*node.get(CEL_RULES, []), *(r for v in node.values() for r in cel_rules(v))]
    if isinstance(node, list):
        return [r for v in node for r in cel_rules(v)]
    return []


def render(which: str = PLURAL) -> str:
    """The CRD YAML of ``modelevaluations`` (the default) or ``evaluationschedules``."""
    header = "# Generated by `python -m modeleval.api.crd` from operator/modeleval/api; do not edit.\n"
    if which == SCHEDULE_PLURAL:
        header = header.replace("crd`", f"crd {SCHEDULE_PLURAL}`")
        return header + yaml.safe_dump(schedule_crd(), sort_keys=False, width=100)
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render(*sys.argv[1:2]))
