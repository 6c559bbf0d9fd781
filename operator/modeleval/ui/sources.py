"""Where the dashboard reads results: MongoDB or the local results directory, behind one small
interface. Both only read.

MongoDB filters, sorts and pages on the server and sends only the list's columns; it creates no
index (the server may hold a read-only user): the indexes that keep the list fast are listed in
:data:`RECOMMENDED_INDEXES` for whoever owns the database. The directory keeps an in-memory
index of the list columns, refreshed when the directory changes, reading only new or changed
files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from pydantic import ValidationError

from ..api.results import ResultDocument, document_id
from ..store import ResultsStoreError
from .listing import LIST_FIELDS, PAGE_SIZE, ListPage, ListQuery, Row, row_from_document

log = logging.getLogger(__name__)

# The indexes of the results collection that keep the list's filters and sorts fast (created by
# the chart's or the database's owner, never by this read-only server).
RECOMMENDED_INDEXES = (
    [("finishedAt", -1)],
    [("namespace", 1), ("finishedAt", -1)],
    [("schedule", 1), ("namespace", 1), ("finishedAt", -1)],
    [("status", 1), ("finishedAt", -1)],
    [("name", 1), ("finishedAt", -1)],
    [("uid", 1), ("attempt", -1)],
)
# A schedule's page plots at most this many of its newest runs.
MAX_RUNS = 500


@dataclass
class Loaded:
    """A stored attempt read whole: its document, or why it could not be read."""

    key: str
    document: ResultDocument | None = None
    problem: str | None = None


@dataclass
class Choices:
    """What the list's filters can choose from (most common first for metrics)."""

    namespaces: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)


class ResultSource(Protocol):
    def list(self, query: ListQuery) -> ListPage: ...
    def get(self, uid: str, attempt: int | None = None) -> Loaded | None: ...
    def attempts(self, uid: str) -> list[int]: ...
    def runs(self, namespace: str, schedule: str) -> list[Loaded]: ...
    def choices(self) -> Choices: ...


def _validated(raw: Any, key: str, stored: bool = True) -> Loaded:
    """A document read from MongoDB (``stored``: its keys escaped) or from a JSON file."""
    try:
        return Loaded(key, ResultDocument.from_stored(raw) if stored
                      else ResultDocument.model_validate(raw))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        return Loaded(key, problem=f"{where}: {first['msg']}")


def _cached(seconds: float) -> Callable:
    """Reuses a method's answer for ``seconds`` (the filters' choices: a scan of every row)."""
    def wrap(method: Callable) -> Callable:
        def cached(self) -> Any:
            now = time.monotonic()
            held = self.__dict__.get(f"_cache_{method.__name__}")
            if held is None or now - held[0] > seconds:
                held = (now, method(self))
                self.__dict__[f"_cache_{method.__name__}"] = held
            return held[1]
        return cached
    return wrap


def _matches(row: Row, query: ListQuery) -> bool:
    if row.problem is not None:  # shown while no filter is set (nothing known to filter on)
        return not any((query.namespace, query.status, query.schedule, query.model))
    return ((query.namespace is None or row.namespace == query.namespace)
            and (query.status is None or row.status == query.status)
            and (query.schedule is None or row.schedule == query.schedule)
            and (query.model is None or query.model.casefold()
                 in (row.model_uri or "").casefold()))


def _ordered(rows: list[Row], query: ListQuery) -> list[Row]:
    reverse = query.order == "desc"
    rows = sorted(rows, key=lambda row: (row.finished_at, row.uid), reverse=reverse)
    if query.sort == "name":
        rows.sort(key=lambda row: row.name, reverse=reverse)
    elif query.sort == "metric" and query.metric:
        known = [r for r in rows if query.metric in r.metrics]
        known.sort(key=lambda row: row.metrics[query.metric], reverse=reverse)
        rows = known + [r for r in rows if query.metric not in r.metrics]
    # Unreadable documents first: what needs looking at is not left on page 200.
    return [r for r in rows if r.problem] + [r for r in rows if not r.problem]


def page_of(rows: list[Row], query: ListQuery) -> ListPage:
    """The query's page of rows held in memory (the directory's index, MongoDB's list index)."""
    found = _ordered([r for r in rows if _matches(r, query)], query)
    return ListPage(found[query.skip:query.skip + PAGE_SIZE], len(found), query)


def choices_of(rows: list[Row]) -> Choices:
    readable = [r for r in rows if r.problem is None]
    metrics = Counter(r.primary_metric for r in readable if r.primary_metric)
    return Choices(sorted({r.namespace for r in readable if r.namespace}),
                   sorted({r.schedule for r in readable if r.schedule}),
                   [m for m, _ in metrics.most_common()])


# MongoDB's list index holds the list columns of at most this many documents (about 1 KB each);
# a bigger collection is listed by the server alone.
MAX_INDEXED = 100_000
# How often the list index is read whole again (documents deleted since, or rewritten with an
# older finish time); between, only documents finished since the newest seen are read.
FULL_RESCAN_SECONDS = 300.0


class MongoSource:
    """Lists from an in-memory index of every document's list columns once it is built (one scan
    at start, then only documents finished since the newest seen, every ``refresh_seconds``);
    until then, and for a collection over :data:`MAX_INDEXED`, the server filters, sorts and
    pages. The index is what keeps the list fast on a server that cannot use indexes for these
    queries (FerretDB v1 reads every document for each)."""

    def __init__(self, uri: str, database: str, collection: str, timeout_ms: int = 5_000,
                 refresh_seconds: float = 10.0):
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        try:
            self._client = MongoClient(uri, serverSelectionTimeoutMS=timeout_ms,
                                       connectTimeoutMS=timeout_ms,
                                       # a slow answer (a big collection without the indexes)
                                       # still beats a page saying the store is down
                                       socketTimeoutMS=max(timeout_ms * 3, 60_000))
        except (PyMongoError, ValueError) as error:  # its words may quote the password
            raise ResultsStoreError(f"the MongoDB URI is not valid ({type(error).__name__})") from None
        self._collection = self._client[database][collection]
        # The index's scans read every document: on a server that decodes them all (FerretDB v1)
        # that takes minutes at 10,000, so they wait as long as it takes, in the background.
        self._scanning = MongoClient(uri, serverSelectionTimeoutMS=timeout_ms,
                                     connectTimeoutMS=timeout_ms)[database][collection]
        self._errors = PyMongoError
        self.refresh_seconds = refresh_seconds
        self._index: dict[str, Row] | None = None
        self._newest = ""  # the newest finishedAt the index holds
        self._scanned = 0.0  # when the index was last read whole (monotonic)

    def _read(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except self._errors as error:
            raise ResultsStoreError(f"MongoDB {what} failed: {str(error).splitlines()[0][:300]}",
                                    public=f"MongoDB {what} failed") from None

    @staticmethod
    def _filter(query: ListQuery) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in ("namespace", "status", "schedule"):
            if getattr(query, name) is not None:
                found[name] = getattr(query, name)
        if query.model is not None:
            found["model.uri"] = {"$regex": re.escape(query.model), "$options": "i"}
        return found

    @staticmethod
    def _sort(query: ListQuery) -> list[tuple[str, int]]:
        way = 1 if query.order == "asc" else -1
        if query.sort == "name":
            return [("name", way), ("finishedAt", -1), ("_id", 1)]
        if query.sort == "metric" and query.metric:
            return [(f"metrics.{query.metric}", way), ("finishedAt", -1), ("_id", 1)]
        return [("finishedAt", way), ("_id", way)]

    @property
    def indexed(self) -> bool:
        return self._index is not None

    def _list_columns(self, where: dict[str, Any]) -> dict[str, Row]:
        found = self._read("list", lambda: list(self._scanning.find(
            where, dict.fromkeys(LIST_FIELDS, 1), batch_size=1000)))
        return {str(d.get("_id")): row_from_document(d, str(d.get("_id"))) for d in found}

    def refresh_index(self) -> None:
        """Reads the whole list index, or what finished since the newest it holds."""
        whole = self._index is None or time.monotonic() - self._scanned > FULL_RESCAN_SECONDS
        if whole:
            count = self._read("count", self._scanning.estimated_document_count)
            if count > MAX_INDEXED:
                self._index = None
                return
            started, rows = time.monotonic(), self._list_columns({})
            self._scanned = started
        else:
            rows = {**self._index, **self._list_columns({"finishedAt": {"$gte": self._newest}})}
        self._newest = max((r.finished_at for r in rows.values()), default="")
        self._index = rows  # replaced whole: a request reads one index or the other

    def keep_index(self, stop: threading.Event | None = None) -> None:
        """Builds the index and keeps it fresh until ``stop`` (a daemon thread's loop); a
        failed read is tried again later (waiting twice as long after each failure, up to
        :data:`FULL_RESCAN_SECONDS`), the index kept as it was."""
        stop = stop or threading.Event()
        wait = self.refresh_seconds
        while not stop.is_set():
            try:
                self.refresh_index()
                wait = self.refresh_seconds
            except ResultsStoreError as error:
                log.warning("the list index was not refreshed: %s", error.message)
                wait = min(wait * 2, FULL_RESCAN_SECONDS)
            stop.wait(wait)

    def list(self, query: ListQuery) -> ListPage:
        index = self._index
        if index is not None:
            return page_of(list(index.values()), query)
        where = self._filter(query)
        projection = dict.fromkeys(LIST_FIELDS, 1)

        def page() -> list[dict]:
            return list(self._collection.find(where, projection).sort(self._sort(query))
                        .skip(query.skip).limit(PAGE_SIZE))

        found = self._read("list", page)
        total = self._read("count", lambda: self._collection.count_documents(where))
        return ListPage([row_from_document(d, str(d.get("_id"))) for d in found], total, query)

    def _by_id(self, key: str) -> Loaded | None:
        found = self._read("read", lambda: self._collection.find_one({"_id": key}))
        return None if found is None else _validated(found, key)

    def get(self, uid: str, attempt: int | None = None) -> Loaded | None:
        if attempt is None and self._index is not None:
            # The index knows the attempts: one read by _id (which every server answers from
            # its primary key) instead of a query on uid; one it lacks (newer than the index,
            # or unreadable) is asked of the server.
            attempt = max(self.attempts(uid), default=None)
        if attempt is not None:
            return self._by_id(document_id(uid, attempt))
        found = self._read("read", lambda: next(iter(
            self._collection.find({"uid": uid}).sort("attempt", -1).limit(1)), None))
        return None if found is None else _validated(found, str(found.get("_id")))

    def attempts(self, uid: str) -> list[int]:
        index = self._index
        if index is not None:
            return sorted(r.attempt for r in index.values()
                          if r.uid == uid and r.attempt is not None)
        found = self._read("read", lambda: list(self._collection.find({"uid": uid},
                                                                       {"attempt": 1})))
        return sorted({d["attempt"] for d in found if isinstance(d.get("attempt"), int)})

    def runs(self, namespace: str, schedule: str) -> list[Loaded]:
        index = self._index
        if index is not None:
            keys = sorted((r.finished_at, key) for key, r in index.items()
                          if r.problem is None and r.namespace == namespace
                          and r.schedule == schedule)[-MAX_RUNS:]
            return [run for _, key in keys if (run := self._by_id(key)) is not None]
        found = self._read("read", lambda: list(self._collection.find(
            {"namespace": namespace, "schedule": schedule}, {"curves": 0})
            .sort("finishedAt", -1).limit(MAX_RUNS)))
        return [_validated(d, str(d.get("_id"))) for d in reversed(found)]

    def choices(self) -> Choices:
        index = self._index
        return choices_of(list(index.values())) if index is not None else self._distinct()

    @_cached(30.0)
    def _distinct(self) -> Choices:
        def distinct(name: str) -> list[str]:
            values = self._read("read", lambda: self._collection.distinct(name))
            return sorted(v for v in values if isinstance(v, str))

        return Choices(distinct("namespace"), distinct("schedule"), distinct("primaryMetric"))


@dataclass
class _Entry:
    stamp: tuple[int, int]  # (mtime_ns, size): a file whose stamp changed is read again
    row: Row


def _uid_of(name: str) -> tuple[str, int | None]:
    stem = name.removesuffix(".json")
    uid, _, attempt = stem.rpartition("-")
    return (uid, int(attempt)) if uid and attempt.isdigit() else (stem, None)


class DirectorySource:
    """LocalResultStore's directory: one ``<uid>-<attempt>.json`` per attempt."""

    def __init__(self, directory: Path, rescan_seconds: float = 10.0):
        self.directory = Path(directory)
        self.rescan_seconds = rescan_seconds
        self._index: dict[str, _Entry] = {}
        self._seen: tuple[int, float] | None = None  # (directory mtime_ns, when scanned)
        self._lock = threading.Lock()

    def _read_row(self, path: Path) -> Row:
        uid, attempt = _uid_of(path.name)
        try:
            raw = json.loads(path.read_bytes())
        except (OSError, ValueError) as error:
            return Row(uid=uid, attempt=attempt, problem=f"not JSON: {error}")
        if not isinstance(raw, dict):
            return Row(uid=uid, attempt=attempt, problem="not a JSON object")
        row = row_from_document(raw, path.name)
        row.attempt = row.attempt if row.attempt is not None else attempt
        return row

    def refresh(self) -> None:
        """Reads the files added or changed since the last look (the directory's mtime moves
        when a file is written whole, as the store does; a rescan every ``rescan_seconds``
        catches files edited in place)."""
        with self._lock:
            try:
                mtime = os.stat(self.directory).st_mtime_ns
            except FileNotFoundError:
                self._index, self._seen = {}, None
                return
            now = time.monotonic()
            if self._seen and self._seen[0] == mtime and now - self._seen[1] < self.rescan_seconds:
                return
            fresh: dict[str, _Entry] = {}
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if not entry.name.endswith(".json") or entry.name.startswith("."):
                        continue
                    info = entry.stat()
                    stamp = (info.st_mtime_ns, info.st_size)
                    held = self._index.get(entry.name)
                    fresh[entry.name] = held if held and held.stamp == stamp else \
                        _Entry(stamp, self._read_row(Path(entry.path)))
            self._index, self._seen = fresh, (mtime, now)

    def _rows(self) -> list[Row]:
        self.refresh()
        return [entry.row for entry in self._index.values()]

    def list(self, query: ListQuery) -> ListPage:
        return page_of(self._rows(), query)

    def _load(self, path: Path) -> Loaded:
        try:
            raw = json.loads(path.read_bytes())
        except (OSError, ValueError) as error:
            return Loaded(path.name, problem=f"not JSON: {error}")
        return _validated(raw, path.name, stored=False)

    def get(self, uid: str, attempt: int | None = None) -> Loaded | None:
        if attempt is None:
            attempts = self.attempts(uid)
            if not attempts:
                return None
            attempt = attempts[-1]
        path = self.directory / f"{uid}-{attempt}.json"
        return self._load(path) if path.exists() else None

    def attempts(self, uid: str) -> list[int]:
        if not self.directory.exists():
            return []
        found = (_uid_of(p.name) for p in self.directory.glob(f"{glob_escape(uid)}-*.json"))
        return sorted(a for u, a in found if u == uid and a is not None)

    def runs(self, namespace: str, schedule: str) -> list[Loaded]:
        rows = [r for r in self._rows() if r.problem is None and r.namespace == namespace
                and r.schedule == schedule]
        rows.sort(key=lambda row: row.finished_at)
        return [self._load(self.directory / f"{r.uid}-{r.attempt}.json")
                for r in rows[-MAX_RUNS:]]

    def choices(self) -> Choices:
        return choices_of(self._rows())


def glob_escape(text: str) -> str:
    """``text`` matched literally by glob (a uid is letters, digits and '-', but be exact)."""
    return re.sub(r"([*?\[])", r"[\1]", text)
