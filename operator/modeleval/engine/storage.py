"""Object storage behind one small interface: ``s3://`` (boto3; MinIO works) and ``file://``.

Errors become typed :class:`StorageError`s whose reason tells a missing object from a denied
one from an unreachable endpoint; the caller says what was missing (model or dataset).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import Reason, StorageError
from ..files import StagedFile, atomic_write


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    fingerprint: str  # changes whenever the content does (ETag + size, or mtime + size)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


def parse_s3(uri: str) -> S3Location:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.lstrip("/"):
        raise StorageError(f"'{uri}' is not an s3://bucket/key URI", Reason.InvalidSpec)
    return S3Location(parsed.netloc, parsed.path.lstrip("/"))


def file_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise StorageError(f"'{uri}' is not a file:// URI", Reason.InvalidSpec)
    return Path(unquote(parsed.netloc + parsed.path))


_CLIENTS: dict[tuple, object] = {}
_CLIENTS_LOCK = threading.Lock()


def _s3_client(endpoint_url: str | None, region: str):
    """One S3 client per endpoint and process: clients are thread-safe, and building one costs
    more than most reads (every Ray task would otherwise build its own). Keyed by the credentials
    in the environment too, so changing them takes effect."""
    key = (endpoint_url, region, os.environ.get("AWS_ACCESS_KEY_ID"),
           hashlib.sha256(os.environ.get("AWS_SECRET_ACCESS_KEY", "").encode()).hexdigest())
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            # Checksums where an operation requires one, as botocore did before 1.36: its default
            # (a CRC32 of every upload and of every whole-object download, on top of SigV4's
            # payload hash over http and TLS over https) cost about 10 ms of CPU per 13 MiB
            # part, and some S3-compatible stores refuse its headers. The AWS_* variables still
            # choose, where set.
            config = Config(retries={"max_attempts": 5, "mode": "standard"},
                            connect_timeout=5, read_timeout=60, max_pool_connections=32,
                            request_checksum_calculation=os.environ.get(
                                "AWS_REQUEST_CHECKSUM_CALCULATION", "when_required"),
                            response_checksum_validation=os.environ.get(
                                "AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required"))
            # A session of its own: boto3's default session is not thread-safe.
            client = _CLIENTS[key] = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config)
        return client


class Storage:
    """Reads and writes objects by URI. ``not_found`` names the reason used for a missing object."""

    def __init__(self, endpoint_url: str | None = None, region: str | None = None,
                 allow_file: bool = True):
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") \
            or os.environ.get("AWS_ENDPOINT_URL")
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.allow_file = allow_file

    @classmethod
    def from_settings(cls, settings) -> "Storage":
        return cls(settings.s3_endpoint, settings.s3_region, settings.allow_file_uris)

    def __getstate__(self):  # boto3 clients do not pickle; workers build their own
        return {"endpoint_url": self.endpoint_url, "region": self.region,
                "allow_file": self.allow_file}

    def __setstate__(self, state):
        self.__init__(state["endpoint_url"], state["region"], state["allow_file"])

    # ---------------------------------------------------------------- s3 plumbing
    @property
    def s3(self):
        return _s3_client(self.endpoint_url, self.region)

    def _translate(self, error: Exception, uri: str, not_found: Reason) -> StorageError:
        from botocore.exceptions import (ClientError, EndpointConnectionError,
                                         NoCredentialsError, ConnectTimeoutError, ReadTimeoutError)

        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in {"NoSuchKey", "NoSuchBucket", "404", "NotFound"} or status == 404:
                what = "bucket" if code == "NoSuchBucket" else "object"
                return StorageError(f"{uri}: no such {what}", not_found)
            if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                        "Forbidden"} or status == 403:
                return StorageError(f"{uri}: access denied ({code}); check the S3 credentials",
                                    Reason.AccessDenied)
            if status is not None and status >= 500:
                return StorageError(f"{uri}: storage error {code} (HTTP {status})",
                                    Reason.StorageUnavailable, retryable=True)
            return StorageError(f"{uri}: {code or error}", Reason.StorageUnavailable)
        if isinstance(error, NoCredentialsError):
            return StorageError(f"{uri}: no S3 credentials (set AWS_ACCESS_KEY_ID/"
                                "AWS_SECRET_ACCESS_KEY)", Reason.AccessDenied)
        if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
            return StorageError(f"{uri}: cannot reach the S3 endpoint {self.endpoint_url or 'AWS'}"
                                f" ({error})", Reason.StorageUnavailable, retryable=True)
        return StorageError(f"{uri}: {error}", Reason.StorageUnavailable, retryable=True)

    def _local_path(self, uri: str, not_found: Reason) -> Path:
        if not self.allow_file:
            raise StorageError(f"{uri}: file:// URIs are refused here (cluster mode reads only "
                               "object storage)", Reason.InvalidSpec)
        path = file_path(uri)
        if not path.exists():
            raise StorageError(f"{uri}: no such file", not_found)
        if not os.access(path, os.R_OK):
            raise StorageError(f"{uri}: permission denied", Reason.AccessDenied)
        return path

    # ---------------------------------------------------------------- API
    def stat(self, uri: str, not_found: Reason = Reason.DatasetNotFound) -> ObjectInfo:
        if uri.startswith("file://"):
            path = self._local_path(uri, not_found)
            st = path.stat()
            return ObjectInfo(uri, st.st_size, f"file-{st.st_size}-{st.st_mtime_ns}")
        loc = parse_s3(uri)
        try:
            head = self.s3.head_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as error:  # noqa: BLE001 - translated into a typed error
            raise self._translate(error, uri, not_found) from error
        return _s3_info(uri, int(head["ContentLength"]), head)

    def fetch(self, uri: str, not_found: Reason = Reason.DatasetNotFound) -> tuple[ObjectInfo, bytes]:
        """The whole object and its info, from one request in object storage (its fingerprint is
        then the one of the bytes read, even if the object is replaced meanwhile)."""
        if uri.startswith("file://"):
            return self.stat(uri, not_found), self.read(uri, not_found=not_found)
        loc = parse_s3(uri)
        try:
            response = self.s3.get_object(Bucket=loc.bucket, Key=loc.key)
            data = response["Body"].read()
        except Exception as error:  # noqa: BLE001
            raise self._translate(error, uri, not_found) from error
        return _s3_info(uri, len(data), response), data

    def read(self, uri: str, start: int | None = None, end: int | None = None,
             not_found: Reason = Reason.DatasetNotFound) -> bytes:
        """The object's bytes, or the range [start, end) of them."""
        if uri.startswith("file://"):
            path = self._local_path(uri, not_found)
            with open(path, "rb") as f:
                if start:
                    f.seek(start)
                return f.read(None if end is None else end - (start or 0))
        loc = parse_s3(uri)
        kwargs = {}
        if start is not None or end is not None:
            kwargs["Range"] = f"bytes={start or 0}-{'' if end is None else end - 1}"
        try:
            return self.s3.get_object(Bucket=loc.bucket, Key=loc.key, **kwargs)["Body"].read()
        except Exception as error:  # noqa: BLE001
            raise self._translate(error, uri, not_found) from error

    @contextlib.contextmanager
    def open_range(self, uri: str, start: int, end: int,
                   not_found: Reason = Reason.DatasetNotFound) -> Iterator[Callable[[int], bytes]]:
        """Bytes [start, end) as a stream: yields ``read(n)``, which returns up to n bytes and
        b"" at the end, so a reader holds one piece at a time instead of the whole range."""
        if uri.startswith("file://"):
            with open(self._local_path(uri, not_found), "rb") as f:
                f.seek(start)
                left = end - start

                def read_file(n: int) -> bytes:
                    nonlocal left
                    piece = f.read(min(n, left))
                    left -= len(piece)
                    return piece

                yield read_file
            return
        loc = parse_s3(uri)
        try:
            body = self.s3.get_object(Bucket=loc.bucket, Key=loc.key,
                                      Range=f"bytes={start}-{end - 1}")["Body"]
        except Exception as error:  # noqa: BLE001
            raise self._translate(error, uri, not_found) from error

        def read_s3(n: int) -> bytes:
            try:
                return body.read(n)
            except Exception as error:  # noqa: BLE001 - a dropped connection mid-stream
                raise self._translate(error, uri, not_found) from error

        try:
            yield read_s3
        finally:
            body.close()

    def write(self, uri: str, data: bytes) -> None:
        if uri.startswith("file://"):
            atomic_write(self._writable_path(uri), data)
            return
        loc = parse_s3(uri)
        try:
            self.s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
        except Exception as error:  # noqa: BLE001
            raise self._translate(error, uri, Reason.StorageUnavailable) from error

    def write_file(self, uri: str, path: Path) -> None:
        """Uploads a local file, streamed from disk."""
        if uri.startswith("file://"):
            with StagedFile(self._writable_path(uri)) as staged:
                shutil.copyfile(path, staged.temp)
                staged.commit()
            return
        loc = parse_s3(uri)
        with open(path, "rb") as body:
            try:
                self.s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=body)
            except Exception as error:  # noqa: BLE001
                raise self._translate(error, uri, Reason.StorageUnavailable) from error

    def _writable_path(self, uri: str) -> Path:
        """The file a ``file://`` URI names, where this storage may write files."""
        if not self.allow_file:
            raise StorageError(f"{uri}: file:// URIs are refused here", Reason.InvalidSpec)
        return file_path(uri)


def _s3_info(uri: str, size: int, response: dict) -> ObjectInfo:
    """An object's info from a HEAD or GET response: its fingerprint is its size and ETag."""
    etag = str(response.get("ETag", "")).strip('"')
    return ObjectInfo(uri, size, f"s3-{size}-{etag}")


def join_uri(prefix: str, *parts: str) -> str:
    return "/".join([prefix.rstrip("/"), *(p.strip("/") for p in parts)])


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
