"""Object storage: a whole object fetched with its info, and the S3 client's checksum policy."""

from __future__ import annotations

import pytest

from modeleval.engine import storage
from modeleval.engine.storage import Storage


def test_a_fetched_object_has_the_info_a_stat_gives(tmp_path):
    path = tmp_path / "model.json"
    path.write_bytes(b'{"learner": {}}')
    info, data = Storage().fetch(path.as_uri())
    assert info == Storage().stat(path.as_uri()) and data == path.read_bytes()


@pytest.mark.parametrize("env, expected", [
    ({}, "when_required"),
    ({"AWS_REQUEST_CHECKSUM_CALCULATION": "when_supported",
      "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_supported"}, "when_supported"),
])
def test_s3_checksums_only_where_required_unless_the_environment_says(monkeypatch, env, expected):
    """Uploads and downloads carry no extra CRC32 (SigV4 over http, TLS over https already
    protect them) unless AWS_REQUEST_CHECKSUM_CALCULATION / AWS_RESPONSE_CHECKSUM_VALIDATION
    ask for it."""
    monkeypatch.setattr(storage, "_CLIENTS", {})
    for name in ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = Storage(endpoint_url="http://127.0.0.1:9").s3.meta.config
    assert config.request_checksum_calculation == expected
    assert config.response_checksum_validation == expected
