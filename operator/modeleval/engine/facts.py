"""Facts a result records about how it was computed: the versions of what scored it."""

from __future__ import annotations

import platform
from functools import cache
from importlib import metadata

# The distributions whose versions change a result or its speed (xgboost and onnxruntime: the
# models' runtimes; ray: the tasks; numpy and pyarrow: the parsing and the metrics).
LIBRARIES = ("modeleval", "numpy", "pyarrow", "xgboost", "onnxruntime", "ray")


@cache
def library_versions() -> dict[str, str]:
    """Python's version and each installed library's (one not installed is left out)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
