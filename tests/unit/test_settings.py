"""Where parsed datasets are cached: configured, local on one machine, shared S3 in a cluster."""

from __future__ import annotations

from modeleval.settings import EngineSettings


def settings(**values) -> EngineSettings:
    return EngineSettings(_env_file=None, **values)


def test_configured_cache_wins_everywhere():
    for allow in (True, False):
        assert settings(cache_uri="s3://c/p", allow_file_uris=allow).resolved_cache_uri(
            "s3://data/x.txt") == "s3://c/p"


def test_one_machine_caches_in_a_local_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert settings().resolved_cache_uri("s3://data/x.txt") == (tmp_path / "modeleval" / "datasets").as_uri()


def test_a_cluster_caches_next_to_the_data_never_on_a_pod_disk(monkeypatch):
    monkeypatch.delenv("MODELEVAL_CACHE_URI", raising=False)
    cluster = settings(allow_file_uris=False)
    assert cluster.resolved_cache_uri("s3://mslr-data/web30k/test.txt", "team-a") == \
        "s3://mslr-data/modeleval-cache/team-a"  # one prefix per namespace
    assert cluster.resolved_cache_uri("s3://mslr-data/t.txt", "team-b") != \
        cluster.resolved_cache_uri("s3://mslr-data/t.txt", "team-a")
    assert not cluster.resolved_cache_uri("s3://b/k").startswith("file://")
