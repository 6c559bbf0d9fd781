"""The dashboard's web app: server-rendered pages (Jinja2, autoescaped) over a result source.

Read-only: every route is a GET. With a token configured, every request but /healthz needs
``Authorization: Bearer <token>`` or the cookie that ``/login?token=...`` sets.
"""

from __future__ import annotations

import hmac
import math
import re
import threading
from pathlib import Path
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Callable
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from pydantic import ValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from ..api.schedule import Degradation
from ..api.spec import checked_uid
from ..report import render as render_report
from ..report import vega_bundle
from ..store import ResultsStoreError
from .cluster import ClusterView, Phases, ScheduleRule
from .config import UIConfig
from .listing import QueryError, parse_list_query
from .sources import DirectorySource, Loaded, MongoSource, ResultSource
from .views import MAX_COMPARED, MIN_COMPARED, compare_metrics, schedule_chart, schedule_points

COOKIE = "modeleval_ui_token"
OPEN_PATHS = ("/login", "/healthz")
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"  # a Kubernetes object's name


def _templates() -> Environment:
    env = Environment(loader=PackageLoader("modeleval.ui", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = lambda value, digits=4: "" if value is None else f"{value:.{digits}f}"
    env.filters["signed"] = lambda value, digits=4: "" if value is None else f"{value:+.{digits}f}"
    return env


def open_source(config: UIConfig) -> ResultSource:
    if config.mongo_uri is not None:
        return MongoSource(config.mongo_uri, config.database, config.collection,
                           config.mongo_timeout_ms, refresh_seconds=config.cache_seconds)
    assert config.results_dir is not None
    return DirectorySource(config.results_dir, rescan_seconds=config.cache_seconds)


class Pages:
    """The routes' work: read, decide what to show, render."""

    def __init__(self, config: UIConfig, source: ResultSource):
        self.config, self.source = config, source
        self.cluster = ClusterView(config.kubeconfig, config.cache_seconds) \
            if config.kubeconfig or config.in_cluster else None
        self.env = _templates()

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            source=self.describe_source(), urlencode=urlencode, **context)
        return HTMLResponse(html, status_code=status)

    def describe_source(self) -> str:
        if self.config.mongo_uri is not None:
            return f"MongoDB {self.config.database}.{self.config.collection}"
        return f"results directory {self.config.results_dir}"

    def problem(self, status: int, title: str, message: str) -> HTMLResponse:
        return self.page("problem.html", status=status, title=title, message=message)

    def evaluations(self, request: Request) -> HTMLResponse:
        query = parse_list_query(request.query_params)
        choices = self.source.choices()
        if query.sort == "metric" and query.metric is None and choices.metrics:
            query = type(query)(**{**query.__dict__, "metric": choices.metrics[0]})
        listed = self.source.list(query)
        phases: Phases | None = None
        if self.cluster is not None:
            phases = self.cluster.phases(row.namespace for row in listed.rows)
        return self.page("evaluations.html", listed=listed, query=query, choices=choices,
                         phases=phases)

    def evaluation(self, uid: str, attempt: int | None) -> HTMLResponse:
        loaded = self.source.get(uid, attempt)
        attempts = self.source.attempts(uid)
        if loaded is None:
            what = f"uid {uid}" + (f" attempt {attempt}" if attempt is not None else "")
            return self.problem(404, "No such evaluation", f"result missing: no result for {what}")
        return self.page("evaluation.html", uid=uid, loaded=loaded, doc=loaded.document,
                         attempts=attempts,
                         attempt=loaded.document.attempt if loaded.document else attempt)

    def report(self, uid: str, attempt: int | None) -> HTMLResponse:
        loaded = self.source.get(uid, attempt)
        if loaded is None:
            return self.problem(404, "No such evaluation", f"result missing: no result for uid {uid}")
        if loaded.document is None:
            return self.problem(200, "Result unreadable", f"result {loaded.key} {loaded.problem}")
        try:
            return HTMLResponse(render_report(loaded.document))
        except Exception as error:  # noqa: BLE001 - an odd document shows why, not a 500
            return self.problem(200, "Report unavailable", f"the report could not be rendered "
                                f"from result {loaded.key}: {type(error).__name__}: {error}")

    def schedule(self, namespace: str, name: str, params: Any) -> HTMLResponse:
        for param, value in (("namespace", namespace), ("name", name)):
            if not re.fullmatch(NAME_PATTERN, value):
                raise QueryError(param, "not a Kubernetes name (lower case letters, digits, "
                                 "'-' and '.')")
        runs = self.source.runs(namespace, name)
        rule = _asked_rule(params) or (self.cluster.schedule_rule(namespace, name)
                                       if self.cluster else ScheduleRule(
            unknown_because="no kubeconfig given: the schedule's degradation rule is not "
            "known (add ?maxDrop= to mark runs by one)"))
        asked = params.get("metric")
        if asked is not None and not 0 < len(asked) <= 64:
            raise QueryError("metric", "a metric name of 1 to 64 characters")
        metric = asked or rule.metric or next(
            (r.document.primary_metric for r in reversed(runs)
             if r.document and r.document.primary_metric), None)
        points = schedule_points(runs, metric, rule.degradation) if metric else []
        return self.page("schedule.html", namespace=namespace, name=name, runs=runs,
                         metric=metric, rule=rule, points=points, charts=bool(points),
                         chart=schedule_chart(points, metric) if points else None)

    def compare(self, uids: list[str]) -> HTMLResponse:
        if not MIN_COMPARED <= len(uids) <= MAX_COMPARED:
            return self.problem(400, "Choose 2 to 8 evaluations", f"compare shows {MIN_COMPARED} "
                                f"to {MAX_COMPARED} evaluations side by side; {len(uids)} "
                                "chosen (query parameter 'uid', once per evaluation)")
        for uid in uids:
            _uid(uid)
        loaded: list[tuple[str, Loaded | None]] = [(uid, self.source.get(uid)) for uid in uids]
        documents = [entry.document if entry else None for _, entry in loaded]
        return self.page("compare.html", loaded=loaded, documents=documents,
                         metrics=compare_metrics(documents))


def _asked_rule(params: Any) -> ScheduleRule | None:
    """A degradation rule given in the URL (``maxDrop``, ``against``): to see what a rule would
    mark, or to mark runs without a kubeconfig."""
    if params.get("maxDrop") is None:
        return None
    try:
        max_drop = float(params["maxDrop"])
    except ValueError:
        raise QueryError("maxDrop", f"not a number: {params['maxDrop'][:40]!r}") from None
    if not math.isfinite(max_drop):
        raise QueryError("maxDrop", "must be a finite number")
    try:
        degradation = Degradation.model_validate({"maxDrop": max_drop,
                                                  "against": params.get("against") or "previous"})
    except ValidationError as error:
        first = error.errors()[0]
        raise QueryError(str(first["loc"][0]), first["msg"]) from None
    return ScheduleRule(degradation, source="the URL's maxDrop")


def _uid(value: str) -> str:
    try:
        return checked_uid(value)
    except ValueError as error:
        raise QueryError("uid", str(error)) from None


def _attempt(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) > 1_000_000:
        raise QueryError("attempt", f"must be a whole number, not {value[:40]!r}")
    return int(value)


def _authorised(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    offered = header[len("Bearer "):] if header.startswith("Bearer ") else \
        request.cookies.get(COOKIE, "")
    return hmac.compare_digest(offered.encode(), token.encode())


def _add_auth(app: FastAPI, pages: Pages, token: str) -> None:
    @app.middleware("http")
    async def require_token(request: Request, call_next: Callable) -> Response:
        if request.url.path in OPEN_PATHS or _authorised(request, token):
            return await call_next(request)
        response = pages.problem(401, "Sign in", "this dashboard needs its token: send "
                                 "'Authorization: Bearer <token>' or open /login?token=<token>")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.get("/login")
    def login(request: Request) -> Response:
        given = request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return pages.problem(401, "Sign in", "the token is not this dashboard's")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response


# Defence in depth beside the escaping: no page is framed by another site, no response is
# sniffed into another type, no URL (a /login?token=...) leaks as a Referer, and a report (its
# charts need scripts) runs in an opaque origin even when opened outside the page's sandboxed
# frame, so its scripts could not read the dashboard's pages or cookie.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": "frame-ancestors 'self'"}
REPORT_POLICY = "sandbox allow-scripts; frame-ancestors 'self'"


def _add_security_headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def secure(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path.endswith("/report"):
            response.headers["Content-Security-Policy"] = REPORT_POLICY
        return response


def _start_indexing(config: UIConfig, source: ResultSource) -> threading.Event:
    """Begins the list's index in the background; the event stops its refreshes."""
    stop = threading.Event()
    if isinstance(source, DirectorySource):
        # The first index of a big directory reads every file (10,000: seconds): begun now, so
        # the first visitor waits for what is left of it, not for all of it.
        threading.Thread(target=source.refresh, name="results-index", daemon=True).start()
    elif isinstance(source, MongoSource) and config.index_mongodb:
        threading.Thread(target=source.keep_index, args=(stop,), name="results-index",
                         daemon=True).start()
    return stop


def create_app(config: UIConfig, source: ResultSource | None = None) -> FastAPI:
    """The dashboard over ``config``'s source (``source``: one already open)."""
    source = source or open_source(config)
    stop = _start_indexing(config, source)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        stop.set()  # the server stops: so does the index's refresh

    pages = Pages(config, source)
    app = FastAPI(title="modeleval", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.pages = pages
    if config.token is not None:
        _add_auth(app, pages, config.token)
    _add_security_headers(app)

    @app.exception_handler(QueryError)
    def bad_query(request: Request, error: QueryError) -> HTMLResponse:
        return pages.problem(400, f"Bad query parameter: {error.param}", str(error))

    @app.exception_handler(ResultsStoreError)
    def store_down(request: Request, error: ResultsStoreError) -> HTMLResponse:
        return pages.problem(503, "Results store unavailable", error.message)

    _add_routes(app, pages)
    return app


def _add_routes(app: FastAPI, pages: Pages) -> None:
    @app.get("/healthz")
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/static/vega.js")
    def vega() -> Response:
        return Response(vega_bundle(), media_type="text/javascript",
                        headers={"Cache-Control": "max-age=86400"})

    @app.get("/")
    def evaluations(request: Request) -> HTMLResponse:
        return pages.evaluations(request)

    @app.get("/evaluations/{uid}")
    def evaluation(uid: str, request: Request) -> HTMLResponse:
        return pages.evaluation(_uid(uid), _attempt(request.query_params.get("attempt")))

    @app.get("/evaluations/{uid}/report")
    def report(uid: str, request: Request) -> HTMLResponse:
        return pages.report(_uid(uid), _attempt(request.query_params.get("attempt")))

    @app.get("/schedules/{namespace}/{name}")
    def schedule(namespace: str, name: str, request: Request) -> HTMLResponse:
        return pages.schedule(namespace, name, request.query_params)

    @app.get("/compare")
    def compare(request: Request) -> HTMLResponse:
        return pages.compare(request.query_params.getlist("uid"))
