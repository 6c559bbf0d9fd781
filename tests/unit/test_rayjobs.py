"""The Jobs API client against a recorded exchange: what it asks for and how it reads answers."""

from __future__ import annotations

import json

import httpx

from modeleval.controller.rayjobs import LOG_READ_BYTES, LOG_TAIL_BYTES, JobInfo, RayJobsClient


def client(answer, seen: list[httpx.Request]) -> RayJobsClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return RayJobsClient("http://head:8265/", "t0ken", transport=httpx.MockTransport(handle))


def test_the_log_is_read_as_a_short_tail_from_the_driver_node():
    seen: list[httpx.Request] = []
    jobs = client(lambda r: httpx.Response(200, text="last lines\n"), seen)
    job = JobInfo("modeleval-u-1", "SUCCEEDED", "", driver_node_id="n1")
    assert jobs.log_tail(job) == "last lines\n"
    (request,) = seen
    assert request.url.path == "/api/v0/logs/file"
    assert dict(request.url.params) == {"node_id": "n1", "submission_id": "modeleval-u-1", "lines": "50"}
    assert request.headers["authorization"] == "Bearer t0ken"
    assert jobs.log_tail(JobInfo("modeleval-u-1", "FAILED", "")) == "" and len(seen) == 1  # no node


def test_the_log_tail_is_streamed_and_capped_in_bytes():
    """A runner printing one endless line cannot make the operator hold (or read) it all."""
    pulled = []

    def endless():
        while True:
            pulled.append(64 * 1024)
            yield b"x" * (64 * 1024)

    jobs = client(lambda r: httpx.Response(200, content=endless()), [])
    job = JobInfo("modeleval-u-1", "SUCCEEDED", "", driver_node_id="n1")
    tail = jobs.log_tail(job)
    assert len(tail.encode()) == LOG_TAIL_BYTES == 1 << 20
    assert sum(pulled) == LOG_READ_BYTES

    big = b"early\n" + b"y" * (2 << 20) + b"\nMODELEVAL_DOCUMENT {}\nlast\n"
    jobs = client(lambda r: httpx.Response(200, content=big), [])
    tail = jobs.log_tail(job)
    assert tail.endswith("\nMODELEVAL_DOCUMENT {}\nlast\n") and "early" not in tail
    assert len(tail) == 1 << 20


def test_a_package_is_uploaded_only_when_the_head_lacks_it():
    seen: list[httpx.Request] = []
    present: set[str] = set()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            present.add(request.url.path)
            return httpx.Response(200)
        return httpx.Response(200 if request.url.path in present else 404)

    jobs = client(answer, seen)
    jobs.ensure_package("gcs://_ray_pkg_abc.zip", b"zip")
    jobs.ensure_package("gcs://_ray_pkg_abc.zip", b"zip")
    assert [(r.method, r.url.path) for r in seen] == [
        ("GET", "/api/packages/gcs/_ray_pkg_abc.zip"), ("PUT", "/api/packages/gcs/_ray_pkg_abc.zip"),
        ("GET", "/api/packages/gcs/_ray_pkg_abc.zip")]
    assert seen[1].content == b"zip"


def test_job_info_carries_its_driver_node_and_end():
    body = {"submission_id": "modeleval-u-1", "status": "SUCCEEDED", "end_time": 1_700_000_000_000,
            "driver_node_id": "n1", "message": "ok"}
    jobs = client(lambda r: httpx.Response(200, text=json.dumps(body)), [])
    job = jobs.get("modeleval-u-1")
    assert job.finished and job.driver_node_id == "n1" and job.ended.year == 2023
