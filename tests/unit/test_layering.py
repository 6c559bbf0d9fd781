"""Dependencies point one way: the controller knows Ray only through its Jobs API, and the api
package imports neither the engine nor the controller."""

from __future__ import annotations

import subprocess
import sys


def imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_controller_does_not_import_the_ray_data_path():
    loaded = imported_after("modeleval.controller.handlers")
    for heavy in ("ray", "numpy", "pyarrow", "xgboost", "onnxruntime", "modeleval.engine.evaluate"):
        assert heavy not in loaded, f"the controller imports {heavy}"


def test_api_imports_neither_engine_nor_controller():
    loaded = imported_after("modeleval.api.crd")
    assert not any(m.startswith(("modeleval.engine", "modeleval.controller", "kopf")) for m in loaded)


def test_engine_knows_no_cluster():
    loaded = imported_after("modeleval.engine.evaluate")
    assert not any(m.startswith(("kopf", "kubernetes", "modeleval.controller")) for m in loaded)
