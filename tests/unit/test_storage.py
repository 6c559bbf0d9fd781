"""Object storage: a whole object fetched with its info, the checksum policy of what is sent to
S3, and what each storage failure (real errors from pyarrow's filesystems) tells the user."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pyarrow import fs as pafs

from modeleval.engine import storage
from modeleval.engine.errors import Reason, StorageError
from modeleval.engine.storage import Storage, storage_error


def test_a_fetched_object_has_the_info_a_stat_gives(tmp_path):
    path = tmp_path / "model.json"
    path.write_bytes(b'{"learner": {}}')
    info, data = Storage().fetch(path.as_uri())
    assert info == Storage().stat(path.as_uri()) and data == path.read_bytes()


def test_a_fetch_gives_the_info_of_the_bytes_it_read_when_the_object_is_replaced(tmp_path,
                                                                                   monkeypatch):
    """Another writer replaces the object between its opening (its info) and its read: the
    fetch reads again, and the info it returns is the one of the bytes it returns."""
    path = tmp_path / "model.json"
    path.write_bytes(b"version 1")
    real_info, replaced = storage._info, []

    def info_then_replaced(where, handle):
        info = real_info(where, handle)
        if not replaced:
            replaced.append(True)
            path.write_bytes(b"version 2, longer")
            os.utime(path, ns=(time.time_ns() + 10**9,) * 2)
        return info

    monkeypatch.setattr(storage, "_info", info_then_replaced)
    info, data = Storage().fetch(path.as_uri())
    assert data == b"version 2, longer" and info == Storage().stat(path.as_uri())


class _RecordingS3(BaseHTTPRequestHandler):
    """An S3 endpoint that takes every PUT and records its headers."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]] = []

    def do_PUT(self):  # noqa: N802 - http.server's naming
        self.seen.append({name.lower(): value for name, value in self.headers.items()})
        self.send_response(200)
        self.send_header("ETag", '"0"')
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, *_):
        """Quiet: the tests read the recorded headers, not the server's log."""


@contextlib.contextmanager
def _recording_endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingS3)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("env, checksummed", [
    ({}, False),
    ({"AWS_REQUEST_CHECKSUM_CALCULATION": "when_supported",
      "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_supported"}, True),
])
def test_s3_checksums_only_where_required_unless_the_environment_says(monkeypatch, env,
                                                                      checksummed):
    """Uploads carry no extra checksum (SigV4 over http, TLS over https already protect them)
    unless AWS_REQUEST_CHECKSUM_CALCULATION / AWS_RESPONSE_CHECKSUM_VALIDATION ask for it; the
    environment is left as it was."""
    monkeypatch.setattr(storage, "_S3_FILESYSTEMS", {})
    monkeypatch.setattr(_RecordingS3, "seen", [])
    for name in ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)
    with _recording_endpoint() as endpoint:
        Storage(endpoint_url=endpoint).write("s3://bucket/key", b"payload")
    [put] = _RecordingS3.seen
    assert ("x-amz-trailer" in put) == checksummed
    assert any(h.startswith("x-amz-checksum") for h in put.values()) == checksummed
    assert dict(os.environ) == before


@contextlib.contextmanager
def _as_another_user():
    """File permissions checked as an unprivileged user (root reads anything)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_a_missing_local_file_is_the_reason_the_caller_names(tmp_path):
    uri = (tmp_path / "absent.json").as_uri()
    for look in (Storage().stat, Storage().read, Storage().fetch):
        with pytest.raises(StorageError) as missing:
            look(uri, not_found=Reason.ModelNotFound)
        assert missing.value.reason == Reason.ModelNotFound
        assert missing.value.message == f"{uri}: no such file" and not missing.value.retryable


def test_a_directory_without_permission_is_access_denied(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "data.txt").write_bytes(b"1 qid:1 1:0.5\n")
    locked.chmod(0o000)
    uri = (locked / "data.txt").as_uri()
    try:
        with _as_another_user(), pytest.raises(StorageError) as denied:
            Storage().stat(uri)
        with _as_another_user(), pytest.raises(StorageError) as unwritable:
            Storage().write((locked / "out.bin").as_uri(), b"x")
    finally:
        locked.chmod(0o700)
    assert denied.value.reason == unwritable.value.reason == Reason.AccessDenied
    assert denied.value.message == f"{uri}: permission denied"
    assert unwritable.value.message.startswith((locked / "out.bin").as_uri())


def test_a_path_through_a_file_is_not_found_and_a_directory_is_no_object(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    through = (tmp_path / "file" / "child").as_uri()
    with pytest.raises(StorageError) as error:
        Storage().read(through)
    assert error.value.reason == Reason.DatasetNotFound and through in error.value.message
    with pytest.raises(StorageError) as directory:
        Storage().stat(tmp_path.as_uri())
    assert directory.value.message.startswith(f"{tmp_path.as_uri()}: ")
    assert "directory" in directory.value.message


def _refused_by_pyarrow(endpoint: str) -> Exception:
    s3 = pafs.S3FileSystem(access_key="k", secret_key="s", endpoint_override=endpoint,
                           region="us-east-1",
                           retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    with pytest.raises(OSError) as refused:
        s3.open_input_file("bucket/key")
    return refused.value


def _refused_by_boto3(endpoint: str) -> Exception:
    import boto3
    from botocore.config import Config

    s3 = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k",
        aws_secret_access_key="s", config=Config(retries={"max_attempts": 1, "mode": "standard"}))
    with pytest.raises(Exception) as refused:
        s3.get_object(Bucket="bucket", Key="key", Range="bytes=0-9")
    return refused.value


@pytest.mark.parametrize("refuse", [_refused_by_pyarrow, _refused_by_boto3],
                         ids=["pyarrow", "boto3 (open_range)"])
def test_an_unreachable_endpoint_is_retried_and_named(refuse):
    """A real connection refused by each S3 client Storage uses (one attempt, no wait)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    error = storage_error(refuse(endpoint), "s3://bucket/key", Reason.DatasetNotFound, endpoint)
    assert error.reason == Reason.StorageUnavailable and error.retryable
    assert error.message.startswith(f"s3://bucket/key: cannot reach the S3 endpoint {endpoint} (")


def test_a_local_write_onto_a_directory_is_refused_and_not_retried(tmp_path):
    """The disk's own refusal: no retry fixes it, and the message says what is in the way."""
    (tmp_path / "taken").mkdir()
    uri = (tmp_path / "taken").as_uri()
    with pytest.raises(StorageError) as error:
        Storage().write(uri, b"x")
    assert error.value.reason == Reason.StorageUnavailable and not error.value.retryable
    assert error.value.message == f"{uri}: not a file (Is a directory)"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no temporary file left
