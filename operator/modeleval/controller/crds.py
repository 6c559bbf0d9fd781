"""`python -m modeleval.controller.crds DIR`: brings modeleval's CRDs in the cluster to the copies
in DIR (the chart's crds/, mounted from a ConfigMap).

Helm installs a chart's crds/ once and never upgrades them, so after `helm upgrade` the API server
would keep serving the old schema and silently prune every field it lacks. The chart runs this as
a pre-install/pre-upgrade hook Job (templates/crd-upgrade.yaml) with RBAC for these two CRDs only.

Each CRD is replaced whole (read, then updated at that resourceVersion) rather than server-side
applied: an apply by a new field manager leaves the fields another manager set in place (Helm's
create of crds/ owns the first copy), so a CEL rule or property a release removed would stay in
the served schema. Labels and annotations others added are kept.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..api.crd import CRD_NAME
from ..api.schedule import SCHEDULE_PLURAL
from ..api.spec import API_GROUP

# The CRD endpoints, addressed like custom objects so the body stays the file's plain mapping
# (the typed client model would re-serialise the schema).
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
OURS = (CRD_NAME, f"{SCHEDULE_PLURAL}.{API_GROUP}")
MANAGER = "modeleval-crd-upgrade"
ATTEMPTS = 5  # updates refused with 409 Conflict (someone wrote in between) before giving up
ESTABLISHED_TIMEOUT = 60.0

log = logging.getLogger("modeleval.crds")


class CrdFileError(ValueError):
    """A file in the directory is not one of modeleval's CRDs."""


def read_crds(directory: Path) -> list[dict]:
    """The CRDs in ``directory`` (every ``*.yaml``), each checked to be one of ours."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise CrdFileError(f"{directory}: no *.yaml files")
    crds = [_one_crd(path) for path in files]
    names = [crd["metadata"]["name"] for crd in crds]
    if len(set(names)) != len(names):
        raise CrdFileError(f"{directory}: a CRD is given twice ({', '.join(sorted(names))})")
    return crds


def _one_crd(path: Path) -> dict:
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as error:
        raise CrdFileError(f"{path.name}: not YAML ({error})") from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise CrdFileError(f"{path.name}: expected one CustomResourceDefinition, found "
                           f"{len(documents)} documents")
    crd = documents[0]
    if (crd.get("apiVersion"), crd.get("kind")) != ("apiextensions.k8s.io/v1", "CustomResourceDefinition"):
        raise CrdFileError(f"{path.name}: apiVersion/kind {crd.get('apiVersion')}/{crd.get('kind')} "
                           "is not apiextensions.k8s.io/v1 CustomResourceDefinition")
    name = (crd.get("metadata") or {}).get("name")
    if name not in OURS or (crd.get("spec") or {}).get("group") != API_GROUP:
        raise CrdFileError(f"{path.name}: {name!r} is not one of modeleval's CRDs "
                           f"({', '.join(OURS)}); this hook changes only those")
    return crd


def replacement(crd: dict, current: dict) -> dict:
    """The body that replaces ``current`` by ``crd``: its spec whole, at current's
    resourceVersion, with the labels and annotations others added kept (ours win)."""
    now = current.get("metadata") or {}
    ours = crd.get("metadata") or {}
    metadata = {"name": ours["name"], "resourceVersion": now["resourceVersion"]}
    for key in ("labels", "annotations"):
        merged = {**(now.get(key) or {}), **(ours.get(key) or {})}
        if merged:
            metadata[key] = merged
    return {**crd, "metadata": metadata}


def upgrade(api: client.CustomObjectsApi, crd: dict) -> str:
    """Creates or replaces one CRD; says which."""
    name = crd["metadata"]["name"]
    for _ in range(ATTEMPTS):
        try:
            current = api.get_cluster_custom_object(*CRDS, name)
        except ApiException as error:
            if error.status != 404:
                raise
            # Created through an apply: its URL names the CRD, so RBAC limited to our two
            # names (resourceNames) can allow it, which a POST's cannot.
            api.patch_cluster_custom_object(*CRDS, name, crd, field_manager=MANAGER,
                                            _content_type="application/apply-patch+yaml")
            return "created"
        try:
            api.replace_cluster_custom_object(*CRDS, name, replacement(crd, current),
                                              field_manager=MANAGER)
            return "replaced"
        except ApiException as error:
            if error.status != 409:
                raise
    raise RuntimeError(f"{name}: changed by someone else {ATTEMPTS} times in a row; run the upgrade again")


def wait_established(api: client.CustomObjectsApi, name: str, timeout: float = ESTABLISHED_TIMEOUT) -> None:
    """Returns once the API server serves ``name`` (condition Established)."""
    deadline = time.monotonic() + timeout
    while True:
        conditions = (api.get_cluster_custom_object(*CRDS, name).get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: not Established after {timeout:.0f}s ({conditions})")
        time.sleep(0.5)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(argv) != 1:
        log.error("usage: python -m modeleval.controller.crds DIRECTORY")
        return 2
    try:
        crds = read_crds(Path(argv[0]))
    except (CrdFileError, OSError) as error:
        log.error("%s", error)
        return 2
    config.load_config()  # in a pod: its ServiceAccount; elsewhere: the kubeconfig
    api = client.CustomObjectsApi()
    for crd in crds:
        name = crd["metadata"]["name"]
        try:
            done = upgrade(api, crd)
            wait_established(api, name)
        except ApiException as error:
            log.error("%s: HTTP %s %s: %s", name, error.status, error.reason, (error.body or "")[:500])
            return 1
        log.info("%s: %s", name, done)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
