"""The Grafana dashboard the chart ships, read as Grafana would send its queries: every panel's
PromQL with Grafana's variables put in (the chart tests check its shape, the e2e test asks a
real Prometheus each query)."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[1] / "charts" / "modeleval" / "dashboards" / "modeleval.json"
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' nested panels included."""
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def substitute(expr: str, dashboard: dict, rate_interval: str = "30s") -> str:
    """The query as Grafana sends it: its interval variables given ``rate_interval`` and each
    template variable its "All" value. An unknown variable is an error, not left in."""
    values = {"__rate_interval": rate_interval, "__interval": rate_interval,
              "__range": rate_interval}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            values[variable["name"]] = variable.get("allValue") or ".*"

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"query {expr!r} uses ${name}, which the dashboard does not define")
        return values[name]

    return _VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The operator's series a query reads (the names it selects that start with modeleval_)."""
    return set(re.findall(r"\b(modeleval_[a-z_]+)", expr))
