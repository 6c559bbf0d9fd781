"""The HTML report of one evaluation: a single self-contained file (every script and style
inline, nothing fetched), readable offline from disk or an S3 link.

``render(document)`` builds it from a result document; ``vega_bundle()`` is the Vega, Vega-Lite
and vega-embed JavaScript it inlines (also served by the dashboard).
"""

from __future__ import annotations

from .bundle import vega_bundle
from .render import render

__all__ = ["render", "vega_bundle"]
