"""Object storage behind one small interface, on pyarrow's filesystems: ``s3://`` (S3FileSystem;
MinIO works) and ``file://`` (LocalFileSystem). A URI is resolved once into a filesystem and a
path; every method is then written once against ``pyarrow.fs``.

Every failure goes through :func:`storage_error`, the one place that turns what the filesystem
raised into a typed :class:`StorageError` whose reason tells a missing object from a denied one
from an unreachable endpoint; the caller says what was missing (model or dataset).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyarrow import fs as pafs

from .errors import Reason, StorageError
from ..files import StagedFile


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


# ------------------------------------------------------------------------ errors to reasons
_AWS_ERROR = re.compile(r"AWS Error (?P<code>[A-Z_]+)(?: \(HTTP status (?P<status>\d+)\))?")
_MISSING = {"NO_SUCH_KEY", "NO_SUCH_BUCKET", "RESOURCE_NOT_FOUND", "NO_SUCH_UPLOAD"}
_DENIED = {"ACCESS_DENIED", "SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID",
           "MISSING_AUTHENTICATION_TOKEN", "INVALID_CLIENT_TOKEN_ID", "UNRECOGNIZED_CLIENT",
           "EXPIRED_TOKEN", "INVALID_SIGNATURE"}
_UNREACHABLE = {"NETWORK_CONNECTION", "REQUEST_TIMEOUT", "REQUEST_EXPIRED", "SLOW_DOWN",
                "SERVICE_UNAVAILABLE", "INTERNAL_FAILURE", "THROTTLING", "REQUEST_TIME_TOO_SKEWED"}


def storage_error(error: Exception, uri: str, not_found: Reason,
                  endpoint: str | None = None) -> StorageError:
    """What ``error``, raised by a filesystem while it worked on ``uri``, means to a user: the
    reason and a message that names the URI. ``not_found`` is the reason for a missing object
    (ModelNotFound, DatasetNotFound; StorageUnavailable for a write); ``endpoint`` the S3
    endpoint, named when it cannot be reached."""
    if isinstance(error, StorageError):
        return error
    local = uri.startswith("file://")
    if isinstance(error, FileNotFoundError):
        return StorageError(f"{uri}: no such {'file' if local else 'object'}", not_found)
    if isinstance(error, (NotADirectoryError, IsADirectoryError)):
        return StorageError(f"{uri}: not a file ({_detail(error)})", not_found)
    if isinstance(error, PermissionError):
        return StorageError(f"{uri}: permission denied", Reason.AccessDenied)
    if type(error).__module__.startswith("botocore"):
        code, status = _botocore_code(error)
        return _s3_error(code, status, error, uri, not_found, endpoint)
    match = _AWS_ERROR.search(str(error))
    if match is None:
        # A local disk's own trouble (full, read-only) is not fixed by trying again.
        return StorageError(f"{uri}: {_detail(error)}", Reason.StorageUnavailable,
                            retryable=not local)
    return _s3_error(match["code"], int(match["status"] or 0), error, uri, not_found, endpoint)


def _s3_error(code: str, status: int, error: Exception, uri: str, not_found: Reason,
              endpoint: str | None) -> StorageError:
    """An S3 error code (as the AWS SDK names it) or HTTP status, as a reason."""
    if code in _MISSING or status == 404:
        what = "bucket" if code == "NO_SUCH_BUCKET" else "object"
        return StorageError(f"{uri}: no such {what}", not_found)
    if code in _DENIED or status == 403:
        return StorageError(f"{uri}: access denied ({code}); check the S3 credentials",
                            Reason.AccessDenied)
    if code == "NETWORK_CONNECTION":
        return StorageError(f"{uri}: cannot reach the S3 endpoint {endpoint or 'AWS'} "
                            f"({_detail(error)})", Reason.StorageUnavailable, retryable=True)
    if code in _UNREACHABLE or status >= 500:
        return StorageError(f"{uri}: storage error {code}" + (f" (HTTP {status})" if status else ""),
                            Reason.StorageUnavailable, retryable=True)
    return StorageError(f"{uri}: {_detail(error)}", Reason.StorageUnavailable)


def _botocore_code(error: Exception) -> tuple[str, int]:
    """A botocore error (the stream of :meth:`Storage.open_range`) as the AWS SDK for C++ names
    it (``NoSuchKey`` -> ``NO_SUCH_KEY``), and its HTTP status (0 where none came back)."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", code).upper(), status
    if isinstance(error, NoCredentialsError):
        return "MISSING_AUTHENTICATION_TOKEN", 0
    # The rest are the transport's: no connection, a timeout, a connection dropped mid-stream.
    return "NETWORK_CONNECTION", 0


def _detail(error: Exception) -> str:
    """The part of a filesystem error a user can act on: the system's words for an errno, or
    pyarrow's text after its own prefix ("When reading information for key ... :") without the
    SDK's request id."""
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)
    text = str(error)
    text = text.split(": ", 1)[1] if text.startswith("When ") and ": " in text else text
    return re.sub(r" \(Request ID: [^)]*\)", "", text).strip()


# ------------------------------------------------------------------------ filesystems
_S3_FILESYSTEMS: dict[tuple, pafs.S3FileSystem] = {}
_S3_LOCK = threading.Lock()
_LOCAL = pafs.LocalFileSystem()
# The AWS SDK reads these when a filesystem is made. Checksums only where an operation requires
# one, as botocore did before 1.36: the SDK's default (a CRC of every upload and download, on
# top of SigV4's payload hash over http and TLS over https) is refused by some S3-compatible
# stores. The variables, where set, still choose.
_CHECKSUM_POLICY = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}


def _s3_filesystem(endpoint_url: str | None, region: str) -> pafs.S3FileSystem:
    """One S3 filesystem per endpoint, credentials and process: it is thread-safe, and making
    one costs more than most reads (every Ray task would otherwise make its own)."""
    key = (endpoint_url, region, *_credentials_key())
    with _S3_LOCK:
        filesystem = _S3_FILESYSTEMS.get(key)
        if filesystem is None:
            filesystem = _S3_FILESYSTEMS[key] = _make_s3(_s3_options(endpoint_url, region))
        return filesystem


def _credentials_key() -> tuple[str, ...]:
    """The environment's S3 credentials, as a key a client made with them is kept under (the
    secrets hashed), so that changing them takes effect."""
    return tuple(hashlib.sha256(os.environ.get(name, "").encode()).hexdigest() for name in
                 ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))


def _s3_options(endpoint_url: str | None, region: str) -> dict:
    """How to reach S3: the endpoint and the credentials in this process's environment (in a
    cluster, the evaluation's namespace's Secret; never the operator's)."""
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    # Without both keys the AWS SDK looks for credentials the way botocore does (profile,
    # web identity, instance metadata).
    explicit = {"access_key": key_id, "secret_key": secret,
                "session_token": os.environ.get("AWS_SESSION_TOKEN")} if key_id and secret else {}
    # allow_delayed_open: an upload under 10 MiB is one PUT (not a multipart upload of three
    # requests); a missing bucket is then reported when the write ends.
    return {"region": region, "endpoint_override": endpoint_url, "connect_timeout": 5,
            "request_timeout": 60, "allow_delayed_open": True,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=5), **explicit}


def _make_s3(options: dict) -> pafs.S3FileSystem:
    with _environment_defaults(_CHECKSUM_POLICY):  # read by the SDK as the client is made
        return pafs.S3FileSystem(**options)


_STREAM_CLIENTS: dict[tuple, object] = {}


def _s3_stream_client(endpoint_url: str | None, region: str):
    """The boto3 client :meth:`Storage.open_range` streams with (see there why), one per
    endpoint, credentials and process, configured as the filesystem is: checksums only where
    required unless AWS_* says, 5 attempts, the environment's credentials."""
    key = (endpoint_url, region, *_credentials_key())
    with _S3_LOCK:
        client = _STREAM_CLIENTS.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            policy = {name.lower().removeprefix("aws_"): os.environ.get(name, default)
                      for name, default in _CHECKSUM_POLICY.items()}
            config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5,
                            read_timeout=60, max_pool_connections=32, **policy)
            # A session of its own: boto3's default session is not thread-safe.
            client = _STREAM_CLIENTS[key] = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config)
        return client


@contextlib.contextmanager
def _environment_defaults(defaults: dict[str, str]) -> Iterator[None]:
    """``defaults`` in the environment where it sets none of them, for the duration only."""
    added = [name for name in defaults if name not in os.environ]
    os.environ.update({name: defaults[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@dataclass(frozen=True)
class _Location:
    """A URI resolved: the filesystem that holds it and its path there."""

    uri: str
    filesystem: pafs.FileSystem
    path: str
    scheme: str  # "s3" or "file": the fingerprint's prefix

    @property
    def local(self) -> bool:
        return self.scheme == "file"


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

    def __getstate__(self):  # workers make (or reuse) their own filesystem
        return {"endpoint_url": self.endpoint_url, "region": self.region,
                "allow_file": self.allow_file}

    def __setstate__(self, state):
        self.__init__(state["endpoint_url"], state["region"], state["allow_file"])

    # ---------------------------------------------------------------- resolving and errors
    @property
    def s3(self) -> pafs.S3FileSystem:
        return _s3_filesystem(self.endpoint_url, self.region)

    def _locate(self, uri: str) -> _Location:
        if uri.startswith("file://"):
            if not self.allow_file:
                raise StorageError(f"{uri}: file:// URIs are refused here (cluster mode reads "
                                   "only object storage)", Reason.InvalidSpec)
            return _Location(uri, _LOCAL, str(file_path(uri)), "file")
        loc = parse_s3(uri)
        return _Location(uri, self.s3, f"{loc.bucket}/{loc.key}", "s3")

    @contextlib.contextmanager
    def translated(self, uri: str, not_found: Reason) -> Iterator[None]:
        """Any failure inside becomes the StorageError :func:`storage_error` makes of it."""
        try:
            yield
        except StorageError:
            raise
        except Exception as error:  # noqa: BLE001 - translated into a typed error
            if isinstance(error, FileNotFoundError) and self._bucket_missing(uri):
                raise StorageError(f"{uri}: no such bucket", not_found) from error
            raise storage_error(error, uri, not_found, self.endpoint_url) from error

    def _bucket_missing(self, uri: str) -> bool:
        """Whether an S3 object is missing because its bucket is (pyarrow opens an object with
        a HEAD, whose answer cannot tell them apart); False where that cannot be found out."""
        if not uri.startswith("s3://"):
            return False
        try:
            return self.s3.get_file_info(parse_s3(uri).bucket).type == pafs.FileType.NotFound
        except Exception:  # noqa: BLE001 - the object is missing all the same
            return False

    def local_path(self, uri: str) -> Path | None:
        """The file ``uri`` names on this machine (a ``file://`` URI, where they are allowed);
        None for object storage. For readers that memory-map what is already on the node."""
        if not uri.startswith("file://") or not self.allow_file:
            return None
        return file_path(uri)

    # ---------------------------------------------------------------- reading
    def stat(self, uri: str, not_found: Reason = Reason.DatasetNotFound) -> ObjectInfo:
        with self.translated(uri, not_found):
            where = self._locate(uri)
            with where.filesystem.open_input_file(where.path) as handle:
                return _info(where, handle)

    def fetch(self, uri: str, not_found: Reason = Reason.DatasetNotFound) -> tuple[ObjectInfo, bytes]:
        """The whole object and the info of exactly those bytes: the info is looked at before
        and after the read and the read repeated (a few times) if the object was replaced."""
        for _ in range(3):
            with self.translated(uri, not_found):
                where = self._locate(uri)
                with where.filesystem.open_input_file(where.path) as handle:
                    info, data = _info(where, handle), handle.read()
            if self.stat(uri, not_found) == info and len(data) == info.size:
                return info, data
        raise StorageError(f"{uri}: the object kept changing while it was read",
                           Reason.StorageUnavailable, retryable=True)

    def read(self, uri: str, start: int | None = None, end: int | None = None,
             not_found: Reason = Reason.DatasetNotFound) -> bytes:
        """The object's bytes, or the range [start, end) of them."""
        with self.translated(uri, not_found):
            where = self._locate(uri)
            with where.filesystem.open_input_file(where.path) as handle:
                begin = min(start or 0, handle.size())
                stop = handle.size() if end is None else min(end, handle.size())
                return handle.read_at(max(0, stop - begin), begin)

    @contextlib.contextmanager
    def open_range(self, uri: str, start: int, end: int,
                   not_found: Reason = Reason.DatasetNotFound) -> Iterator[Callable[[int], bytes]]:
        """Bytes [start, end) as a stream: yields ``read(n)``, which returns up to n bytes and
        b"" at the end, so a reader holds one piece at a time instead of the whole range.

        The cold read of a dataset (the LETOR parser reads every byte through here), so in S3
        it keeps its fast path: one GET of the whole range, streamed by boto3. pyarrow's file
        makes a HEAD and then one GET per ``read(n)`` (2 MiB pieces: 129 requests for 256 MiB
        instead of one), and took 1.4 to 2.1 times as long to stream 256 MiB (402-534 MiB/s
        against 727-931 MiB/s; bench/storage.py, MinIO on loopback, 2 CPUs, three runs in
        bench/RESULTS.md), a gap each round trip to a remote S3 widens."""
        with self.translated(uri, not_found):
            where = self._locate(uri)
            source = _LocalRange(where, start, end) if where.local else \
                _S3Range(_s3_stream_client(self.endpoint_url, self.region), uri, start, end)

        def read(n: int) -> bytes:
            with self.translated(uri, not_found):  # a dropped connection mid-stream
                return source.read(n)

        try:
            yield read
        finally:
            source.close()

    # ---------------------------------------------------------------- writing
    def write(self, uri: str, data: bytes) -> None:
        self._put(uri, lambda out: out.write(data))

    def write_file(self, uri: str, path: Path) -> None:
        """Uploads a local file, streamed from disk."""
        def copy(out) -> None:
            with _LOCAL.open_input_stream(str(path)) as source:
                out.upload(source)

        self._put(uri, copy)

    def _put(self, uri: str, fill: Callable) -> None:
        """Writes the whole object ``fill(stream)`` writes. A PUT to object storage is all or
        nothing; a local file is filled under a temporary name and renamed into place, so a
        reader (another task, process or node sharing the directory) never sees half of one."""
        with self.translated(uri, Reason.StorageUnavailable):
            where = self._locate(uri)
            if not where.local:
                with where.filesystem.open_output_stream(where.path) as out:
                    fill(out)
                return
            with StagedFile(Path(where.path)) as staged:
                with where.filesystem.open_output_stream(str(staged.temp)) as out:
                    fill(out)
                staged.commit()

    def create_bucket(self, bucket: str) -> None:
        """Makes the bucket unless it exists (the filesystem reads and writes go through never
        makes one: a write to a missing bucket fails)."""
        with self.translated(f"s3://{bucket}/", Reason.StorageUnavailable):
            if self.s3.get_file_info(bucket).type == pafs.FileType.NotFound:
                options = _s3_options(self.endpoint_url, self.region)
                _make_s3({**options, "allow_bucket_creation": True}).create_dir(bucket)


class _LocalRange:
    """Bytes [start, end) of a local file, read piece by piece."""

    def __init__(self, where: _Location, start: int, end: int):
        self.handle = where.filesystem.open_input_file(where.path)
        self.position, self.end = start, min(end, self.handle.size())

    def read(self, n: int) -> bytes:
        piece = self.handle.read_at(max(0, min(n, self.end - self.position)), self.position)
        self.position += len(piece)
        return piece

    def close(self) -> None:
        self.handle.close()


class _S3Range:
    """Bytes [start, end) of an S3 object: one ranged GET, its body read piece by piece."""

    def __init__(self, client, uri: str, start: int, end: int):
        loc = parse_s3(uri)
        self.body = client.get_object(Bucket=loc.bucket, Key=loc.key,
                                      Range=f"bytes={start}-{end - 1}")["Body"]

    def read(self, n: int) -> bytes:
        return self.body.read(n)

    def close(self) -> None:
        self.body.close()


def _info(where: _Location, handle) -> ObjectInfo:
    """An object's info from its open handle: its fingerprint is its size and its version (S3's
    ETag, from the HEAD that opened it; a local file's modification time)."""
    size = handle.size()
    etag = (handle.metadata() or {}).get("ETag")
    version = etag.decode().strip('"') if etag else \
        str(where.filesystem.get_file_info(where.path).mtime_ns)
    return ObjectInfo(where.uri, size, f"{where.scheme}-{size}-{version}")


def join_uri(prefix: str, *parts: str) -> str:
    return "/".join([prefix.rstrip("/"), *(p.strip("/") for p in parts)])


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
