"""A small client of Ray's Jobs REST API (the dashboard's /api/jobs/).

The operator talks to Ray only through this: it never imports Ray's data path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

from ..api.results import JOB_PREFIX


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
    def __init__(self, base_url: str, token: str | None, timeout: float = 10.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

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
        body = response.json()
        return JobInfo(body.get("submission_id") or submission_id, body.get("status", "PENDING"),
                       body.get("message") or "", body.get("start_time"), body.get("end_time"))

    def list(self) -> list[JobInfo]:
        response = self._request("GET", "/api/jobs/")
        if response.status_code != 200:
            raise JobsApiError(f"list jobs: HTTP {response.status_code} {response.text[:300]}",
                               response.status_code)
        return [JobInfo(body.get("submission_id") or "", body.get("status", "PENDING"),
                        body.get("message") or "", body.get("start_time"), body.get("end_time"))
                for body in response.json()]

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

    def stop(self, submission_id: str) -> bool:
        response = self._request("POST", f"/api/jobs/{submission_id}/stop")
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise JobsApiError(f"stop {submission_id}: HTTP {response.status_code}", response.status_code)
        return bool(response.json().get("stopped", False))

    def logs(self, submission_id: str) -> str:
        response = self._request("GET", f"/api/jobs/{submission_id}/logs")
        if response.status_code != 200:
            return ""
        return str(response.json().get("logs", ""))
