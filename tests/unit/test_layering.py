"""Dependencies point one way. ``api/`` is the contract and imports neither side; the controller
knows Ray only through its Jobs API and never imports the engine; the engine knows no cluster.

Checked twice: every import statement in the source (including ones inside functions, which
an import-time check cannot see), and what importing a module actually loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "modeleval"

FORBIDDEN = {
    "api": ("modeleval.engine", "modeleval.controller", "modeleval.store", "kopf", "kubernetes",
            "ray", "pymongo"),
    "controller": ("modeleval.engine", "ray", "numpy", "pyarrow", "xgboost", "onnxruntime"),
    "engine": ("kopf", "kubernetes", "modeleval.controller"),
    # The report renders a result document: it reads the contract, nothing that computes it.
    "report": ("modeleval.engine", "modeleval.controller", "modeleval.store", "kopf",
               "kubernetes", "ray", "pymongo", "numpy"),
    # The dashboard reads stored results and the cluster; it never computes or reconciles.
    "ui": ("modeleval.engine", "modeleval.controller", "kopf", "ray", "numpy"),
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, relative imports resolved, wherever the statement is."""
    package = ".".join(("modeleval", *path.relative_to(PACKAGE).parent.parts))
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from . import engine` names a module too
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_source_import_crosses_a_layer(layer: str) -> None:
    crossings = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, module in imports_of(path):
            if any(_within(module, banned) for banned in FORBIDDEN[layer]):
                crossings.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not crossings, "\n".join(crossings)


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    probe = PACKAGE / "controller" / "_layering_probe.py"
    probe.write_text("def f():\n    from ..engine.errors import Reason\n    return Reason\n")
    try:
        assert (2, "modeleval.engine.errors") in imports_of(probe)
    finally:
        probe.unlink()


def loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("layer, module", [("controller", "modeleval.controller.handlers"),
                                           ("api", "modeleval.api.crd"),
                                           ("engine", "modeleval.engine.evaluate"),
                                           ("report", "modeleval.report"),
                                           ("ui", "modeleval.ui.app")])
def test_importing_a_layer_loads_nothing_it_must_not(layer: str, module: str) -> None:
    loaded = loaded_after(module)
    crossed = sorted(m for m in loaded if any(_within(m, b) for b in FORBIDDEN[layer]))
    assert not crossed, f"importing {module} loads {crossed[:5]}"


@pytest.mark.parametrize("module", ["modeleval.engine.inference", "modeleval.engine.scoring"])
def test_a_task_process_imports_only_what_its_tasks_use(module: str) -> None:
    """Every fresh Ray worker (and predicting actor) imports the task modules before its first
    task: Arrow's compute and CSV modules (the general parser's, and the path without the
    tokenizer), pandas and the spec models (pydantic: about 0.09 s a process; the tasks' metrics
    need only which way a metric improves) load where they are used, not in every worker."""
    loaded = loaded_after(module)
    assert not loaded & {"pyarrow.compute", "pyarrow.csv", "pandas", "pydantic",
                         "modeleval.api.spec"}
