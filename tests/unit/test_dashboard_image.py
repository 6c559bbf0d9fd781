"""The chart's dashboard runs `python -m modeleval.ui` from the operator's image, which installs
only the operator's and the dashboard's dependencies (no numpy, Arrow or Ray): what serving the
pages imports must all be in that image. And in a pod, with no kubeconfig, the live phase comes
from the pod's own ServiceAccount when (and only when) its token is mounted. The docs give the
database's owner the indexes the list page wants."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import distribution
from pathlib import Path

import pytest

from modeleval.ui.command import runs_in_cluster, ui
from modeleval.ui.config import UIConfig
from modeleval.ui.sources import RECOMMENDED_INDEXES

from .test_images import ROOT, installed_by

# Serves the list page and the health route from an empty results directory (straight through
# ASGI: no test client's imports), loads the Vega bundle's package, and prints the file of every
# module this loaded from an installed distribution (site-packages).
SERVE = """
import asyncio, json, sys, tempfile
from pathlib import Path
before = set(sys.modules)
import modeleval.report, modeleval.ui.command, uvicorn, vl_convert
from modeleval.ui.app import create_app
from modeleval.ui.config import UIConfig

async def status(app, path):
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
               "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
               "root_path": "", "headers": [], "client": ("127.0.0.1", 1), "server": ("t", 80)},
              receive, send)
    return sent[0]["status"]

app = create_app(UIConfig(results_dir=Path(tempfile.mkdtemp())))
assert asyncio.run(status(app, "/healthz")) == 200
assert asyncio.run(status(app, "/")) == 200
loaded = [m for name, m in list(sys.modules.items()) if name not in before and m is not None]
print(json.dumps(sorted({str(Path(m.__file__).resolve()) for m in loaded
                         if "site-packages" in (getattr(m, "__file__", None) or "")})))
"""


def image_files() -> dict[str, str]:
    """Every Python file the operator image's distributions install, to its distribution."""
    found = {}
    for name in installed_by(ROOT / "images/operator/Dockerfile"):
        dist = distribution(name)
        found.update({str(dist.locate_file(f).resolve()): name for f in dist.files or ()
                      if f.suffix in (".py", ".so")})
    return found


def test_serving_the_dashboard_imports_only_what_the_operator_image_installs():
    result = subprocess.run([sys.executable, "-c", SERVE], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    owners = image_files()
    assert loaded and [f for f in loaded if f not in owners] == [], "the operator image lacks these"
    assert {"fastapi", "uvicorn", "altair", "vl-convert-python"} & {owners[f] for f in loaded}


def test_the_module_entry_point_is_the_ui_command():
    assert (ROOT / "operator/modeleval/ui/__main__.py").exists()
    params = ui.make_context("python -m modeleval.ui", ["--host", "0.0.0.0", "--port", "8765",
                                                        "--database", "team"]).params
    assert (params["host"], params["port"], params["database"]) == ("0.0.0.0", 8765, "team")


@pytest.mark.parametrize("kubeconfig, environ, token_exists, expected", [
    (None, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, True, True),
    (None, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, False, False),  # token not mounted
    (None, {}, True, False),                                           # not in a pod
    (Path("kubeconfig"), {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, True, False),
])
def test_in_cluster_only_in_a_pod_with_its_token_mounted_and_no_kubeconfig(
        tmp_path, kubeconfig, environ, token_exists, expected):
    token = tmp_path / "token"
    if token_exists:
        token.write_text("t")
    assert runs_in_cluster(kubeconfig, environ, token) is expected


def test_a_kubeconfig_and_the_in_cluster_config_are_not_both_taken(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        UIConfig(results_dir=tmp_path, kubeconfig=tmp_path / "k", in_cluster=True)


def test_the_docs_create_the_indexes_the_list_page_wants():
    """The docs' mongosh lines for the dashboard's collection are the dashboard's own list
    (it creates none: its MongoDB user only reads)."""
    text = (ROOT / "docs/guide/reports.md").read_text()
    documented = [[(field, int(order)) for field, order in re.findall(r"(\w+): (-?1)", keys)]
                  for keys in re.findall(r"^db\.results\.createIndex\(\{([^}]*)\}\)$", text, re.M)]
    assert documented == [list(keys) for keys in RECOMMENDED_INDEXES]


def test_the_dashboards_templates_are_installed_with_the_package():
    """An installed modeleval (the operator image's) carries every page template: PackageLoader
    reads them from the package, not from the checkout."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = ROOT / "operator/modeleval/ui"
    templates = [p.relative_to(package) for p in (package / "templates").rglob("*") if p.is_file()]
    assert templates
    assert [t for t in templates if not any(t.match(g) for g in data.get("modeleval.ui", []))] == []
