"""Where result documents go: MongoDB (upsert keyed by uid + attempt) or a local directory.

The runner writes here and the operator reads here; neither side builds or parses a document by
hand (:class:`~modeleval.api.results.ResultDocument` is the contract). A write that fails
because the store is down is retried with backoff; if the store stays down, the document is kept
in a local spool and written once the store returns, so a result is never lost and never written
twice (the key makes a replay an idempotent upsert).

Every :class:`MongoResultStore` on one URI shares one client (its pool and monitor threads), so
an operator reading many databases holds one client, not one per database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .api.reasons import Reason
from .api.results import PROGRESS_COLLECTION, ProgressDocument, ResultDocument, document_id
from .files import atomic_write

log = logging.getLogger(__name__)


class ResultsStoreError(Exception):
    """The results store did not answer or refused a request (retryable). ``message`` has the
    driver's words (hosts, topology) for a log; ``public`` only what failed, for a place others
    read (a tenant's status and Events)."""

    reason = Reason.ResultsStoreUnavailable
    retryable = True

    def __init__(self, message: str, public: str | None = None):
        super().__init__(message)
        self.message = message
        self.public = public or message


@dataclass(frozen=True)
class ProfiledQuery:
    """A succeeded evaluation with a recorded profile, in ``namespace`` only (a reference is
    never looked up in another tenant's results): by evaluation ``name``, or among the runs of
    ``schedule``, the newest (or the ``oldest``), other than ``exclude_uid`` (the asking run)."""

    namespace: str | None
    name: str | None = None
    schedule: str | None = None
    oldest: bool = False
    exclude_uid: str | None = None

    def mongo_filter(self) -> dict[str, Any]:
        found: dict[str, Any] = {"namespace": self.namespace, "status": "Succeeded",
                                 "profile": {"$ne": None}}
        if self.name is not None:
            found["name"] = self.name
        if self.schedule is not None:
            found["schedule"] = self.schedule
        if self.exclude_uid is not None:
            found["uid"] = {"$ne": self.exclude_uid}
        return found

    def matches(self, document: ResultDocument) -> bool:
        return (document.namespace == self.namespace and document.succeeded
                and document.profile is not None
                and (self.name is None or document.name == self.name)
                and (self.schedule is None or document.schedule == self.schedule)
                and document.uid != self.exclude_uid)


class ResultStore(Protocol):
    def upsert(self, document: ResultDocument) -> None: ...
    def get(self, uid: str, attempt: int | None = None) -> ResultDocument | None: ...
    def list(self, limit: int = 50) -> list[ResultDocument]: ...
    def find_profiled(self, query: ProfiledQuery) -> ResultDocument | None: ...


# The operator may hold one client per namespace that brings its own MongoDB URI: the least
# recently used beyond this many are closed.
MAX_CLIENTS = 64
_clients: OrderedDict[tuple[str, int], Any] = OrderedDict()
_clients_lock = threading.Lock()


def _client(uri: str, timeout_ms: int):
    from pymongo import MongoClient

    with _clients_lock:
        key = (uri, timeout_ms)
        if key not in _clients:
            _clients[key] = MongoClient(uri, serverSelectionTimeoutMS=timeout_ms,
                                        connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms * 3)
        _clients.move_to_end(key)
        while len(_clients) > MAX_CLIENTS:
            _clients.popitem(last=False)[1].close()
        return _clients[key]


def _error(what: str, error: Exception) -> ResultsStoreError:
    return ResultsStoreError(f"MongoDB {what} failed: {str(error).splitlines()[0][:300]}",
                             public=f"MongoDB {what} failed")


class MongoResultStore:
    def __init__(self, uri: str, database: str = "modeleval", collection: str = "results",
                 timeout_ms: int = 10_000):
        from pymongo.errors import PyMongoError

        try:
            client = _client(uri, timeout_ms)
        except (PyMongoError, ValueError) as error:  # its words may quote the URI, password too
            raise ResultsStoreError(f"the MongoDB URI is not valid ({type(error).__name__})") from None
        self._collection = client[database][collection]
        self._progress = client[database][PROGRESS_COLLECTION]

    def upsert(self, document: ResultDocument) -> None:
        from pymongo.errors import PyMongoError

        body = document.to_stored()
        try:
            self._collection.replace_one({"_id": document.id}, body, upsert=True)
        except PyMongoError as error:
            raise _error("write", error) from None

    def insert_if_absent(self, document: ResultDocument) -> bool:
        """Writes ``document`` unless its attempt has one already; whether it was written."""
        from pymongo.errors import DuplicateKeyError, PyMongoError

        try:
            self._collection.insert_one(document.to_stored())
            return True
        except DuplicateKeyError:
            return False
        except PyMongoError as error:
            raise _error("write", error) from None

    def get(self, uid: str, attempt: int | None = None) -> ResultDocument | None:
        from pymongo.errors import PyMongoError

        try:
            if attempt is not None:
                found = self._collection.find_one({"_id": document_id(uid, attempt)})
            else:
                found = next(iter(self._collection.find({"uid": uid}).sort("attempt", -1).limit(1)), None)
        except PyMongoError as error:
            raise _error("read", error) from None
        return ResultDocument.from_stored(found) if found else None

    def list(self, limit: int = 50) -> list[ResultDocument]:
        from pymongo.errors import PyMongoError

        try:
            found = list(self._collection.find({}).sort("finishedAt", -1).limit(limit))
        except PyMongoError as error:
            raise _error("read", error) from None
        return [ResultDocument.from_stored(d) for d in found]

    def find_profiled(self, query: ProfiledQuery) -> ResultDocument | None:
        """The evaluation ``query`` asks for (the reference of a drift comparison)."""
        from pymongo.errors import PyMongoError

        try:
            found = next(iter(self._collection.find(query.mongo_filter())
                              .sort("finishedAt", 1 if query.oldest else -1).limit(1)), None)
        except PyMongoError as error:
            raise _error("read", error) from None
        return ResultDocument.from_stored(found) if found else None

    def report_progress(self, progress: ProgressDocument) -> None:
        """Progress of a running attempt, read by the operator (best effort: never raises)."""
        from pymongo.errors import PyMongoError

        try:
            self._progress.replace_one({"_id": progress.id}, progress.to_mongo(), upsert=True)
        except PyMongoError as error:
            log.warning("progress not recorded: %s", str(error).splitlines()[0][:200])

    def get_progress(self, uid: str, attempt: int) -> ProgressDocument | None:
        from pymongo.errors import PyMongoError

        try:
            found = self._progress.find_one({"_id": document_id(uid, attempt)})
        except PyMongoError as error:
            raise _error("read", error) from None
        return ProgressDocument.model_validate(found) if found else None


class LocalResultStore:
    """One JSON file per (uid, attempt) in a directory; used when no MongoDB is configured."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, uid: str, attempt: int) -> Path:
        return self.directory / f"{uid}-{attempt}.json"

    def upsert(self, document: ResultDocument) -> None:
        atomic_write(self._path(document.uid, document.attempt), document.to_json())

    def _read(self, path: Path) -> ResultDocument:
        return ResultDocument.model_validate_json(path.read_text())

    def get(self, uid: str, attempt: int | None = None) -> ResultDocument | None:
        if attempt is not None:
            path = self._path(uid, attempt)
            return self._read(path) if path.exists() else None
        matches = sorted(self.directory.glob(f"{uid}-*.json"),
                         key=lambda path: int(path.stem.rsplit("-", 1)[1]))
        return self._read(matches[-1]) if matches else None

    def list(self, limit: int = 50) -> list[ResultDocument]:
        if not self.directory.exists():
            return []
        docs = [self._read(p) for p in self.directory.glob("*.json")]
        return sorted(docs, key=lambda document: document.finished_at, reverse=True)[:limit]

    def find_profiled(self, query: ProfiledQuery) -> ResultDocument | None:
        found = [document for document in self.list(limit=10**9) if query.matches(document)]
        if not found:
            return None
        return found[-1] if query.oldest else found[0]


def write_with_retry(store: ResultStore, document: ResultDocument, spool: Path | None,
                     attempts: int = 5, first_delay: float = 1.0, max_delay: float = 30.0,
                     sleep=time.sleep) -> bool:
    """Upserts with exponential backoff. Returns True when written; when every attempt failed
    and a spool directory is given, the document is kept there (returns False) for a replay."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            store.upsert(document)
            return True
        except ResultsStoreError as error:
            log.warning("results store unavailable (attempt %d/%d): %s", attempt, attempts,
                        error.message)
            if attempt == attempts:
                if spool is None:
                    raise
                LocalResultStore(spool).upsert(document)
                return False
            sleep(delay)
            delay = min(delay * 2, max_delay)
    return False


def replay_spool(store: ResultStore, spool: Path) -> int:
    """Writes every spooled document to ``store``; each is removed once written. Returns count."""
    if not spool.exists():
        return 0
    written = 0
    for path in sorted(spool.glob("*.json")):
        store.upsert(ResultDocument.model_validate_json(path.read_text()))
        path.unlink()
        written += 1
    return written


__all__ = ["LocalResultStore", "MongoResultStore", "ResultStore", "ResultsStoreError",
           "replay_spool", "write_with_retry"]
