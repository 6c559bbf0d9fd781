"""The evaluations list: its query (filters, sort, page) read from the URL, and its rows.

A row is read from a stored document's list columns only. A document that lacks them or holds
the wrong types becomes a row that says so (``problem``) instead of failing the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from ..api.status import TERMINAL_PHASES, TerminalPhase

PAGE_SIZE = 50
SORTS = ("finished", "name", "metric")
ORDERS = ("asc", "desc")
# A stored result is a finished attempt's: its status is one of the terminal phases.
STATUSES = tuple(str(phase) for phase in TERMINAL_PHASES)
# Longest text a filter may hold (a model URI is the longest a user types).
MAX_FILTER = 1024
# The document fields the list reads (MongoDB's projection; the directory index keeps these).
LIST_FIELDS = ("uid", "attempt", "name", "namespace", "status", "reason", "primaryMetric",
               "metrics", "model.uri", "schedule", "finishedAt", "reportUri")


class QueryError(ValueError):
    """A query parameter the page cannot use; ``param`` names it (a 400 page)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"query parameter {param!r}: {message}")
        self.param = param


@dataclass(frozen=True)
class ListQuery:
    namespace: str | None = None
    model: str | None = None  # a part of the model's URI
    status: str | None = None
    schedule: str | None = None
    sort: str = "finished"
    order: str = "desc"
    metric: str | None = None  # the metric shown and sorted by (default: each row's primary)
    page: int = 1

    @property
    def skip(self) -> int:
        return (self.page - 1) * PAGE_SIZE

    def params(self, **changes: Any) -> dict[str, str]:
        """This query as URL parameters (defaults left out), with ``changes`` applied."""
        values = {k: getattr(self, k) for k in ("namespace", "model", "status", "schedule",
                                                 "sort", "order", "metric", "page")}
        values.update(changes)
        defaults = ListQuery()
        return {k: str(v) for k, v in values.items()
                if v not in (None, "") and v != getattr(defaults, k)}


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value.strip() == "":
        return None
    if len(value) > MAX_FILTER:
        raise QueryError(name, f"longer than {MAX_FILTER} characters")
    return value.strip()


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...],
            default: str | None) -> str | None:
    value = _text(params, name)
    if value is None:
        return default
    if value not in choices:
        raise QueryError(name, f"must be one of {', '.join(choices)}, not {value[:80]!r}")
    return value


def parse_list_query(params: Mapping[str, str]) -> ListQuery:
    """The list's query from URL parameters; a :class:`QueryError` names the bad one."""
    known = {"namespace", "model", "status", "phase", "schedule", "sort", "order", "metric",
             "page"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise QueryError(unknown[0], f"unknown (known: {', '.join(sorted(known))})")
    sort = _choice(params, "sort", SORTS, "finished")
    page_text = _text(params, "page") or "1"
    if not page_text.isdigit() or not 1 <= int(page_text) <= 1_000_000:
        raise QueryError("page", f"must be a whole number from 1, not {page_text[:80]!r}")
    # `phase` is the same filter by the name kubectl shows (a stored result is Succeeded/Failed).
    status = _choice(params, "status", STATUSES, None) or _choice(params, "phase", STATUSES, None)
    metric = _text(params, "metric")
    if metric is not None and ("." in metric or metric.startswith("$")):
        raise QueryError("metric", "a metric name holds no '.' and does not start with '$'")
    return ListQuery(namespace=_text(params, "namespace"), model=_text(params, "model"),
                     status=status, schedule=_text(params, "schedule"), sort=sort,
                     order=_choice(params, "order", ORDERS, "asc" if sort == "name" else "desc"),
                     metric=metric, page=int(page_text))


class _ListColumns(BaseModel):
    """The columns of ResultDocument the list reads (MongoDB returns only these: a whole
    document with its curves is tens of KB). Its own model because a projection lacks the
    fields ResultDocument requires; the names and aliases are ResultDocument's (a unit test
    holds them together)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    uid: str
    attempt: int
    name: str
    namespace: str | None = None
    status: TerminalPhase
    reason: str | None = None
    primary_metric: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    schedule: str | None = None
    finished_at: str
    report_uri: str | None = None


@dataclass
class Row:
    """One stored attempt in the list. ``problem``: why its document could not be read (the
    other fields then hold what is known: the key)."""

    uid: str
    attempt: int | None = None
    name: str = ""
    namespace: str | None = None
    status: str | None = None
    reason: str | None = None
    primary_metric: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str | None = None
    schedule: str | None = None
    finished_at: str = ""
    report_uri: str | None = None
    problem: str | None = None

    def metric(self, name: str | None) -> tuple[str | None, float | None]:
        """The metric shown for this row: ``name``, or its primary metric."""
        shown = name or self.primary_metric
        return shown, self.metrics.get(shown) if shown else None


def row_from_document(raw: Mapping[str, Any], key: str) -> Row:
    """The list row of a stored document (camelCase, as stored); ``key`` names it when it is
    unreadable (its _id or file name)."""
    try:
        columns = _ListColumns.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        uid = raw.get("uid") if isinstance(raw.get("uid"), str) else key
        return Row(uid=uid, problem=f"{where}: {first['msg']}")
    uri = columns.model.get("uri")
    return Row(uid=columns.uid, attempt=columns.attempt, name=columns.name,
               namespace=columns.namespace, status=columns.status, reason=columns.reason,
               primary_metric=columns.primary_metric, metrics=columns.metrics,
               model_uri=uri if isinstance(uri, str) else None, schedule=columns.schedule,
               finished_at=columns.finished_at, report_uri=columns.report_uri)


@dataclass
class ListPage:
    rows: list[Row]
    total: int
    query: ListQuery

    @property
    def pages(self) -> int:
        return max((self.total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
