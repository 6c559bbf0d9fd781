"""`modeleval run` on bad manifests: metadata the API server would refuse, and control characters
anywhere, each answered with one line naming where it is, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from manifest_corpus import GOOD_YAML
from modeleval.api.metadata import ANNOTATIONS_MAX_BYTES
from modeleval.cli import main


def with_metadata(extra: str) -> str:
    return GOOD_YAML.replace("metadata: {name: ok}", "metadata:\n  name: ok\n" + extra)


BAD = {
    "nul-byte-in-a-value": (GOOD_YAML.replace("task: ranking", "task: rank\0ing"),
                            "line 5, column 13: control character U+0000 is not allowed"),
    "escape-byte-in-a-key": (GOOD_YAML.replace("  metrics:", "  met\x1brics:"),
                             "line 8, column 6: control character U+001B is not allowed"),
    "escaped-nul-in-the-model-uri": (
        GOOD_YAML.replace("{uri: s3://models/ranker.json}", '{uri: "s3://models/r\\0.json"}'),
        "spec.model.uri (line 6): control character U+0000 is not allowed"),
    "escaped-del-in-a-metric": (GOOD_YAML.replace("[ndcg@10, mrr]", '[ndcg@10, "mrr\\x7f"]'),
                                "spec.metrics[1] (line 8): control character U+007F is not allowed"),
    "escaped-nul-in-an-annotation": (with_metadata('  annotations: {note: "a\\0b"}\n'),
                                     "metadata.annotations.note (line 5): control character U+0000"),
    "escaped-c1-in-a-key": (with_metadata('  labels: {"team\\x85": a}\n'),
                            "metadata.labels: a key (line 5): control character U+0085"),
    "label-key": (with_metadata("  labels: {'my team': a}\n"),
                  "metadata.labels: Invalid value: 'my team': name part must consist of"),
    "label-key-prefix": (with_metadata("  labels: {'Team.Example.com/x': a}\n"),
                         "metadata.labels: Invalid value: 'Team.Example.com/x': prefix part a "
                         "lowercase RFC 1123 subdomain"),
    "label-value": (with_metadata("  labels: {team: 'search & ads'}\n"),
                    "metadata.labels: Invalid value: 'search & ads': a valid label must be"),
    "label-value-long": (with_metadata(f"  labels: {{team: {'a' * 64}}}\n"),
                         "must be no more than 63 characters"),
    "label-value-not-a-string": (with_metadata("  labels: {replicas: 3}\n"),
                                 "metadata.labels.replicas: Input should be a valid string"),
    "annotation-key": (with_metadata("  annotations: {'a/b/c': x}\n"),
                       "metadata.annotations: Invalid value: 'a/b/c': a qualified name"),
    "annotations-too-long": (with_metadata(f"  annotations: {{big: {'x' * ANNOTATIONS_MAX_BYTES}}}\n"),
                             "metadata.annotations: Too long: may not be more than 262144 bytes"),
}


def run_cli(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text.encode())
    result = CliRunner().invoke(main, ["run", str(path)])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.stderr


@pytest.mark.parametrize("case", BAD)
def test_a_bad_manifest_gets_one_line_naming_where(tmp_path, case):
    text, expected = BAD[case]
    code, stderr = run_cli(tmp_path, text)
    assert code == 1
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert expected in stderr, stderr


def test_metadata_the_api_server_accepts_is_accepted(tmp_path):
    """Annotation keys are checked lowercased, as the server does; values are free text (tab and
    newline included); the size limit counts keys and values together."""
    from modeleval.runner import parse_manifest

    size = ANNOTATIONS_MAX_BYTES - len("big") - len("Example.com/Note") - len("x\ty\nz")
    manifest = parse_manifest(with_metadata(
        "  labels: {app.kubernetes.io/name: ranker, empty: ''}\n"
        f"  annotations: {{Example.com/Note: \"x\\ty\\nz\", big: {'x' * size}}}\n"))
    assert manifest.metadata.labels == {"app.kubernetes.io/name": "ranker", "empty": ""}


def test_the_installed_command_answers_a_nul_byte_with_one_line(tmp_path):
    """The real entry point, in its own process: no traceback reaches the terminal."""
    path = tmp_path / "nul.yaml"
    path.write_bytes(GOOD_YAML.replace("name: ok", "name: o\0k").encode())
    result = subprocess.run([sys.executable, "-c", "from modeleval.cli import main; main()",
                             "run", str(path)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (f"error: {path}: line 3, column 19: control character "
                                     "U+0000 is not allowed")
