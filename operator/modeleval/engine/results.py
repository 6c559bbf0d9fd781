"""Where result documents go: MongoDB (upsert keyed by uid + attempt) or a local directory.

A write that fails because the store is down is retried with backoff; if the store stays
down, the document is kept in a local spool and written once the store returns, so a result is
never lost and never written twice (the key makes a replay an idempotent upsert).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from .errors import ResultsStoreError

log = logging.getLogger(__name__)


class ResultStore(Protocol):
    def upsert(self, document: dict[str, Any]) -> None: ...
    def get(self, uid: str, attempt: int | None = None) -> dict[str, Any] | None: ...
    def list(self, limit: int = 50) -> list[dict[str, Any]]: ...


class MongoResultStore:
    def __init__(self, uri: str, database: str = "modeleval", collection: str = "results",
                 timeout_ms: int = 10_000):
        from pymongo import MongoClient

        self._client = MongoClient(uri, serverSelectionTimeoutMS=timeout_ms,
                                   connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms * 3)
        self._collection = self._client[database][collection]

    def upsert(self, document: dict[str, Any]) -> None:
        from pymongo.errors import PyMongoError

        key = {"_id": f"{document['uid']}:{document['attempt']}"}
        body = {k: v for k, v in document.items() if k != "_id"}
        try:
            self._collection.replace_one(key, {**key, **body}, upsert=True)
        except PyMongoError as error:
            raise ResultsStoreError(f"MongoDB write failed: {str(error).splitlines()[0][:300]}") from None

    def get(self, uid: str, attempt: int | None = None) -> dict[str, Any] | None:
        from pymongo.errors import PyMongoError

        try:
            if attempt is not None:
                return self._collection.find_one({"_id": f"{uid}:{attempt}"})
            found = list(self._collection.find({"uid": uid}).sort("attempt", -1).limit(1))
            return found[0] if found else None
        except PyMongoError as error:
            raise ResultsStoreError(f"MongoDB read failed: {str(error).splitlines()[0][:300]}") from None

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        from pymongo.errors import PyMongoError

        try:
            return list(self._collection.find({}).sort("finishedAt", -1).limit(limit))
        except PyMongoError as error:
            raise ResultsStoreError(f"MongoDB read failed: {str(error).splitlines()[0][:300]}") from None

    def report_progress(self, uid: str, attempt: int, done: int, total: int, unit: str) -> None:
        """Progress of a running attempt, read by the operator (best effort)."""
        from datetime import datetime, timezone

        from pymongo.errors import PyMongoError

        try:
            self._collection.database["progress"].replace_one(
                {"_id": f"{uid}:{attempt}"},
                {"_id": f"{uid}:{attempt}", "done": done, "total": total, "unit": unit,
                 "updatedAt": datetime.now(timezone.utc).isoformat()}, upsert=True)
        except PyMongoError as error:
            log.warning("progress not recorded: %s", str(error).splitlines()[0][:200])

    def get_progress(self, uid: str, attempt: int) -> dict[str, Any] | None:
        from pymongo.errors import PyMongoError

        try:
            return self._collection.database["progress"].find_one({"_id": f"{uid}:{attempt}"})
        except PyMongoError as error:
            raise ResultsStoreError(f"MongoDB read failed: {str(error).splitlines()[0][:300]}") from None

    def close(self) -> None:
        self._client.close()


class LocalResultStore:
    """One JSON file per (uid, attempt) in a directory; used when no MongoDB is configured."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, uid: str, attempt: int) -> Path:
        return self.directory / f"{uid}-{attempt}.json"

    def upsert(self, document: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(document["uid"], document["attempt"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2, default=str))
        tmp.replace(path)

    def get(self, uid: str, attempt: int | None = None) -> dict[str, Any] | None:
        if attempt is not None:
            path = self._path(uid, attempt)
            return json.loads(path.read_text()) if path.exists() else None
        matches = sorted(self.directory.glob(f"{uid}-*.json"),
                         key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        return json.loads(matches[-1].read_text()) if matches else None

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        if not self.directory.exists():
            return []
        docs = [json.loads(p.read_text()) for p in self.directory.glob("*.json")]
        return sorted(docs, key=lambda d: d.get("finishedAt", ""), reverse=True)[:limit]


def write_with_retry(store: ResultStore, document: dict[str, Any], spool: Path | None,
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
                spool.mkdir(parents=True, exist_ok=True)
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
        store.upsert(json.loads(path.read_text()))
        path.unlink()
        written += 1
    return written
