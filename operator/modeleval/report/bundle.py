"""The Vega JavaScript every report inlines: built once, then kept on disk and in memory.

vl-convert builds the bundle (Vega, Vega-Lite, vega-embed; about 0.9 MB) in 1.5 to 5 seconds
and holds the GIL meanwhile, so a fresh process would pay that on every report. The first build
is kept in the user's cache (``$XDG_CACHE_HOME/modeleval``, keyed by vl-convert's version, which
fixes the bundle's content); later processes read it in milliseconds. ``python -m
modeleval.report.bundle`` builds it ahead of time (e.g. in an image).
"""

from __future__ import annotations

import os
import tempfile
from functools import cache
from pathlib import Path

# The bundle's last statement sets this global; a cached file without it is rebuilt.
_MARKER = "window.vegaEmbed="


def cache_path() -> Path:
    import vl_convert

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modeleval" / f"vega-bundle-{vl_convert.__version__}.js"


def _read_cached(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text if _MARKER in text else None


def _write_cached(path: Path, text: str) -> None:
    """Best effort: a read-only or full home only means the next process builds it again (a
    partly written temporary file is removed, never renamed into place)."""
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False,
                                         suffix=".tmp") as out:
            temporary = Path(out.name)
            out.write(text)
        os.replace(temporary, path)
    except OSError:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


@cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one classic script that sets ``window.vegaEmbed``,
    ``window.vega`` and ``window.vegaLite``; it fetches nothing."""
    path = cache_path()
    bundle = _read_cached(path)
    if bundle is None:
        import vl_convert

        bundle = vl_convert.javascript_bundle()
        _write_cached(path, bundle)
    return bundle


if __name__ == "__main__":
    print(f"{len(vega_bundle()):,} characters in {cache_path()}")
