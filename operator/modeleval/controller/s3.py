"""S3 clients with a namespace's own credentials (the Secret ``s3_secret`` holds, the one its
evaluations' Ray pods get) at the operator's ``s3_endpoint``: what the operator reads or writes
for a tenant in S3, the tenant itself could."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def s3_client(endpoint: str | None, key_id: str, secret: str) -> Any:
    # A session per client: boto3's default session is not safe to share between threads.
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint or None, aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}))


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key
