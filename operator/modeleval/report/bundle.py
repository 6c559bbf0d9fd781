"""The Vega JavaScript every report inlines, built once per process."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script that sets ``window.vegaEmbed``; it loads
    nothing over the network. vl-convert builds it (about 0.9 MB, a second or two), so it is
    cached for the process."""
    import vl_convert

    return vl_convert.javascript_bundle()
