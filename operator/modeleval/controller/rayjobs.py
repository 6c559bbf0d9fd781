"""A small client of Ray's Jobs REST API (the dashboard's /api/jobs/).

The operator talks to Ray only through this: it never imports Ray's data path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

from ..api.results import JOB_PREFIX


# The runner's document line comes last but one (then its one-line result): a short tail holds it.
LOG_TAIL_LINES = 50
# Whatever the job printed, the operator holds at most the last LOG_TAIL_BYTES of that tail, and
# stops reading after LOG_READ_BYTES (the log is written by code in a tenant's pods).
LOG_TAIL_BYTES = 1 << 20
LOG_READ_BYTES = 8 << 20


class JobsApiError(Exception):
    """The Jobs API could not be reached or refused a request."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class JobInfo:
    submission_id: str
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    message: str
    start_time: int | None = None
    end_time: int | None = None
    driver_node_id: str | None = None  # where the job's driver (the runner) ran

    @property
    def finished(self) -> bool:
        return self.status in ("SUCCEEDED", "FAILED", "STOPPED")

    @property
    def ended(self) -> datetime | None:
        """When the job ended (the Jobs API gives milliseconds since the epoch)."""
        return datetime.fromtimestamp(self.end_time / 1000, tz=timezone.utc) if self.end_time else None


def running_jobs(listed: list[JobInfo]) -> set[str]:
    """Submission ids of the operator's jobs that have not ended (what holds a job slot)."""
    return {j.submission_id for j in listed if j.submission_id.startswith(JOB_PREFIX) and not j.finished}


class RayJobsClient:
    def __init__(self, base_url: str, token: str | None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RayJobsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise JobsApiError(f"Ray Jobs API at {self._http.base_url} unreachable: {error}") from None

    def get(self, submission_id: str) -> JobInfo | None:
        response = self._request("GET", f"/api/jobs/{submission_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise JobsApiError(f"GET job {submission_id}: HTTP {response.status_code} "
                               f"{response.text[:300]}", response.status_code)
        return _job(response.json(), submission_id)

    def list(self) -> list[JobInfo]:
        response = self._request("GET", "/api/jobs/")
        if response.status_code != 200:
            raise JobsApiError(f"list jobs: HTTP {response.status_code} {response.text[:300]}",
                               response.status_code)
        return [_job(body, "") for body in response.json()]

    def submit(self, request: dict[str, Any]) -> JobInfo:
        """Submits; a job that already exists under the same id is returned instead (reattach)."""
        existing = self.get(request["submission_id"])
        if existing is not None:
            return existing
        response = self._request("POST", "/api/jobs/", json=request)
        if response.status_code == 200:
            return self.get(request["submission_id"]) or JobInfo(request["submission_id"], "PENDING", "")
        # A concurrent submission with the same id is refused by the server: reattach to it.
        existing = self.get(request["submission_id"])
        if existing is not None:
            return existing
        raise JobsApiError(f"submit {request['submission_id']}: HTTP {response.status_code} "
                           f"{response.text[:300]}", response.status_code)

    def ensure_package(self, uri: str, data: bytes) -> None:
        """Uploads a working_dir package to the head's GCS unless it is there (pinned for a
        while by the check, so a submission right after finds it)."""
        protocol, name = uri.split("://", 1)
        path = f"/api/packages/{protocol}/{name}"
        found = self._request("GET", path)
        if found.status_code == 200:
            return
        if found.status_code != 404:
            raise JobsApiError(f"GET package {name}: HTTP {found.status_code} {found.text[:300]}",
                               found.status_code)
        response = self._request("PUT", path, content=data)
        if response.status_code != 200:
            raise JobsApiError(f"upload package {name}: HTTP {response.status_code} "
                               f"{response.text[:300]}", response.status_code)

    def stop(self, submission_id: str) -> bool:
        response = self._request("POST", f"/api/jobs/{submission_id}/stop")
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise JobsApiError(f"stop {submission_id}: HTTP {response.status_code}", response.status_code)
        return bool(response.json().get("stopped", False))

    def log_tail(self, job: JobInfo, lines: int = LOG_TAIL_LINES,
                 limit: int = LOG_TAIL_BYTES) -> str:
        """The last ``lines`` lines of the job's driver log, read from its node through the
        state API, streamed, and of those at most the last ``limit`` bytes; never the whole log
        of a long job. Empty when unavailable."""
        if not job.driver_node_id:
            return ""
        params = {"node_id": job.driver_node_id, "submission_id": job.submission_id,
                  "lines": lines}
        try:
            with self._http.stream("GET", "/api/v0/logs/file", params=params) as response:
                if response.status_code != 200:
                    return ""
                return _last_bytes(response.iter_bytes(), limit).decode("utf-8", "replace")
        except httpx.HTTPError as error:
            raise JobsApiError(f"Ray Jobs API at {self._http.base_url} unreachable: {error}") from None


def _last_bytes(chunks: Iterable[bytes], limit: int, most: int = LOG_READ_BYTES) -> bytes:
    """The last ``limit`` bytes of the first ``most`` bytes of ``chunks``."""
    kept, read = bytearray(), 0
    for chunk in chunks:
        kept += chunk
        read += len(chunk)
        if len(kept) > limit:
            del kept[:len(kept) - limit]
        if read >= most:
            break
    return bytes(kept)


def _job(body: dict[str, Any], submission_id: str) -> JobInfo:
    return JobInfo(body.get("submission_id") or submission_id, body.get("status", "PENDING"),
                   body.get("message") or "", body.get("start_time"), body.get("end_time"),
                   body.get("driver_node_id") or None)
