"""Storage against the test bed's real MinIO: what a missing bucket, a missing key and refused
credentials tell the user, through every way of reading and writing (pyarrow's S3 filesystem,
and the boto3 stream of open_range), and credentials taken from the environment each time."""

from __future__ import annotations

import uuid

import boto3
import pytest

from modeleval.engine.errors import Reason, StorageError
from modeleval.engine.storage import Storage

pytestmark = pytest.mark.integration


def _stream(uri: str, not_found: Reason) -> bytes:
    with Storage().open_range(uri, 0, 5, not_found=not_found) as read:
        return read(5)


READS = {
    "stat": lambda uri, reason: Storage().stat(uri, not_found=reason),
    "read": lambda uri, reason: Storage().read(uri, 0, 5, not_found=reason),
    "fetch": lambda uri, reason: Storage().fetch(uri, not_found=reason),
    "open_range": _stream,
}


@pytest.fixture(scope="module")
def stored(bed):
    """A bucket made through Storage (twice: the second finds it) and one object in it."""
    bucket = f"storage-{uuid.uuid4().hex[:8]}"
    Storage().create_bucket(bucket)
    Storage().create_bucket(bucket)
    uri = f"s3://{bucket}/data/d.txt"
    Storage().write(uri, b"1 qid:1 1:0.5\n")
    return bucket, uri


def test_an_object_s_info_is_its_etag_and_every_read_agrees(bed, stored):
    bucket, uri = stored
    s3 = boto3.client("s3", endpoint_url=bed.s3_endpoint, aws_access_key_id=bed.s3_access_key,
                      aws_secret_access_key=bed.s3_secret_key, region_name="us-east-1")
    etag = s3.head_object(Bucket=bucket, Key="data/d.txt")["ETag"].strip('"')
    info, data = Storage().fetch(uri)
    assert info == Storage().stat(uri) and info.fingerprint == f"s3-14-{etag}"
    assert data == Storage().read(uri) == b"1 qid:1 1:0.5\n"
    assert [READS[name](uri, Reason.DatasetNotFound) for name in ("read", "open_range")] == [
        b"1 qid", b"1 qid"]


@pytest.mark.parametrize("name", list(READS))
def test_a_missing_key_and_a_missing_bucket_are_the_caller_s_reason(bed, stored, name):
    bucket, _ = stored
    for uri, what in ((f"s3://{bucket}/data/absent.txt", "object"),
                      (f"s3://no-such-{bucket}/data/d.txt", "bucket")):
        with pytest.raises(StorageError) as missing:
            READS[name](uri, Reason.ModelNotFound)
        assert missing.value.reason == Reason.ModelNotFound and not missing.value.retryable
        assert missing.value.message == f"{uri}: no such {what}"


def test_a_write_to_a_missing_bucket_says_so(bed, stored):
    uri = f"s3://no-such-{stored[0]}/report.html"
    with pytest.raises(StorageError) as missing:
        Storage().write(uri, b"<html>")
    assert missing.value.reason == Reason.StorageUnavailable
    assert missing.value.message == f"{uri}: no such bucket"


@pytest.mark.parametrize("key_id", ["the-bed-s-key", "not-a-key"])
def test_refused_credentials_are_access_denied_and_never_replaced(bed, stored, monkeypatch,
                                                                  key_id):
    """Credentials come from the environment at each call: wrong ones are refused (whatever
    worked before in this process is not reused), and the right ones work again after."""
    _, uri = stored
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", bed.s3_access_key if key_id == "the-bed-s-key"
                       else key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    calls = {**READS, "write": lambda uri, reason: Storage().write(uri + ".copy", b"x")}
    for name, call in calls.items():
        with pytest.raises(StorageError) as denied:
            call(uri, Reason.DatasetNotFound)
        assert denied.value.reason == Reason.AccessDenied, name
        assert denied.value.message.startswith(f"{uri}") and "access denied" in \
            denied.value.message and "check the S3 credentials" in denied.value.message, name
    monkeypatch.undo()
    assert Storage().read(uri) == b"1 qid:1 1:0.5\n"
