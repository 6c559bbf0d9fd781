"""Render a result document as one self-contained HTML page."""

from __future__ import annotations

import json

from jinja2 import DictLoader, Environment

from ..api.results import ResultDocument
from .bundle import vega_bundle
from .page import TEMPLATE

_ENVIRONMENT = Environment(loader=DictLoader({"report.html": TEMPLATE}), autoescape=True)


def script_json(value: object) -> str:
    """JSON safe inside a <script> element: no "</script", no "<!--" can close or confuse it."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def render(document: ResultDocument) -> str:
    """The whole report of ``document`` as an HTML string."""
    return _ENVIRONMENT.get_template("report.html").render(
        document=document, charts=[], bundle=vega_bundle(), script_json=script_json)
