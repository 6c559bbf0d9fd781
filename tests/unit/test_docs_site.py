"""The documentation site builds (`mkdocs build --strict`: every page in the nav, every link and
anchor found, every included file there) and every shell and YAML sample in it, and in the
README, is checked against the code: manifests are parsed with the operator's own models, Helm
values validated against values.schema.json, and each shell command is run where that is cheap
(`modeleval ... --help`) or held to what exists (a Makefile target, a CLI subcommand and its
options, a chart value, a file in the repository, a kubectl resource the CRDs name).

A fenced block's language says what it is; a `<!-- sample: TAG -->` line just above it says
what it holds where the language does not (helm-values, transcript, mongosh, illustrative).
Every block must be of a kind this module checks: a new kind fails until it has a check."""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from modeleval.api.schedule import EvaluationScheduleSpec
from modeleval.runner import ManifestError, parse_manifest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CHART = ROOT / "charts" / "modeleval"
FENCE = re.compile(r"^(?:<!-- sample: (?P<tag>[a-z-]+) -->\n)?^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$",
                   re.M | re.S)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)


@dataclass(frozen=True)
class Sample:
    where: str
    lang: str
    tag: str
    body: str


def samples() -> list[Sample]:
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start("lang")) + 1
            body = SNIPPET.sub(lambda m: (ROOT / m[1]).read_text(), match["body"])
            found.append(Sample(f"{path.relative_to(ROOT)}:{line}", match["lang"], match["tag"] or "", body))
    return found


SAMPLES = samples()


def test_the_site_builds_strict(tmp_path):
    """Strict: a page missing from the nav, a broken link or anchor, a missing included file
    fails the build. Built outside the checkout."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--site-dir", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "helm-values" / "index.html").exists()
    benchmarks = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    assert "Engine: object store to NDCG@10" in benchmarks  # bench/RESULTS.md, included
    assert "googleapis" not in (tmp_path / "site" / "index.html").read_text()  # no fetched fonts


def test_the_readme_is_short_and_links_into_the_docs():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for page in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / page).exists(), page
    assert "pip install" in text and "make venv" in text and "make test" in text


PATH_IN_TEXT = re.compile(r"`((?:operator|tests|hack|charts|bench|examples|images|crds|docs|api|engine"
                          r"|controller|modeleval|\.ci)/[A-Za-z0-9_./-]*|test_[a-z0-9_]+\.py)"
                          r"(?:::([a-z0-9_]+))?`")


def test_every_file_the_docs_name_exists():
    """A module, test or script named in the docs (`controller/decide.py`,
    `tests/e2e/test_real_node.py::test_network_policies_hold_on_the_real_node`) is there: a file
    moved or renamed fails here until the docs follow."""
    missing = []
    for path in DOCUMENTS:
        for match in PATH_IN_TEXT.finditer(path.read_text()):
            name, function = match[1], match[2]
            found = [c for c in (ROOT / name, ROOT / "operator" / name, ROOT / "operator/modeleval" / name)
                     if c.exists()]
            if not found and name.startswith("test_"):
                found = list((ROOT / "tests").rglob(name))
            if not found or (function and not any(f"def {function}(" in f.read_text() for f in found)):
                missing.append(f"{path.relative_to(ROOT)}: {match[0]}")
    assert missing == []


def test_the_defaults_the_manifest_guide_states_are_the_models():
    spec = parse_manifest("apiVersion: modeleval.dev/v1alpha1\nkind: ModelEvaluation\nmetadata: {name: x}\n"
                          "spec: {task: ranking, model: {uri: s3://bucket/m.json}, dataset: {uri: "
                          "s3://bucket/d.txt}, metrics: [ndcg], confidence: {}}\n").spec
    text = " ".join((ROOT / "docs/guide/manifests.md").read_text().split())
    resources, output, confidence = spec.resources, spec.output.mongodb, spec.confidence
    for stated in (f"`model.format` {spec.model.format.value}",
                   f"`dataset.format` {spec.dataset.format.value}",
                   f"`dataset.labelColumn` {spec.dataset.label_column}",
                   f"`resources` {resources.workers} worker of {resources.cpu} CPU and {resources.memory}, "
                   f"head {resources.head_cpu} CPU and {resources.head_memory}",
                   f"`batchSize` {spec.batch_size}", f"`backoffLimit` {spec.backoff_limit}",
                   f"database {output.database} collection {output.collection}",
                   f"`dataset.missingFeatures` {spec.dataset.missing_features.value}",
                   f"level {confidence.level}, {confidence.resamples} resamples, seed {confidence.seed}"):
        assert stated in text


def test_the_cli_settings_table_names_engine_settings():
    from modeleval.settings import EngineSettings

    text = (ROOT / "docs/guide/cli.md").read_text()
    table = re.findall(r"^\| `MODELEVAL_([A-Z_]+)` \|", text, re.M)
    assert table
    for name in table:
        assert name.lower() in EngineSettings.model_fields, f"MODELEVAL_{name} is no EngineSettings field"


def test_the_monitoring_page_names_every_prometheus_metric_the_operator_serves():
    telemetry = (ROOT / "operator/modeleval/controller/telemetry.py").read_text()
    served = set(re.findall(r'\(\s*"(modeleval_[a-z_]+)"', telemetry))
    named = set(re.findall(r"`(modeleval_[a-z_]+)", (ROOT / "docs/guide/monitoring.md").read_text()))
    assert served and named == served


# --- the checks, one per kind of sample -------------------------------------------------------

def check_manifest(text: str) -> None:
    """A ModelEvaluation as `modeleval run` reads it; an EvaluationSchedule as the operator's
    models read it."""
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    assert documents, "an empty YAML sample"
    for document in documents:
        kind = document.get("kind")
        if kind == "ModelEvaluation":
            parse_manifest(yaml.safe_dump(document), "sample")
        elif kind == "EvaluationSchedule":
            EvaluationScheduleSpec.model_validate(document["spec"])
            assert len(document["metadata"]["name"]) <= 52
        else:
            pytest.fail(f"a YAML sample of kind {kind!r}: tag it (helm-values, illustrative)")


def _merged(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if both else value
    return out


def check_helm_values(text: str) -> None:
    """Values a user passes with -f, on top of the chart's defaults, as Helm checks them."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = _merged(yaml.safe_load((CHART / "values.yaml").read_text()), yaml.safe_load(text))
    jsonschema.Draft7Validator(schema).validate(values)  # the draft its $schema names


def check_mongosh(text: str) -> None:
    """What the dashboard's database owner runs; the index list itself is held to the
    dashboard's by test_dashboard_image."""
    for line in text.splitlines():
        assert re.fullmatch(r"//.*|use \w+|db\.createUser\(\{.*\}\)"
                            r"|db\.results\.createIndex\(\{[^}]*\}\)", line), line


def commands(script: str) -> list[list[str]]:
    """Each simple command of a shell sample, as words (continuations joined, comments and
    the bracketed optional parts of a usage line dropped, pipes and && split)."""
    out: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
        current: list[str] = []
        for word in words + ["&&"]:
            if word in ("&&", "|", ";", "||"):
                out += [current] if current else []
                current = []
            else:
                current.append(word)
    return out


@functools.cache
def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def check_make(args: list[str]) -> None:
    for arg in args:
        if "=" not in arg:
            assert arg in makefile_targets(), f"make {arg}: no such target in the Makefile"


def check_cli(args: list[str]) -> None:
    """A modeleval command line: its subcommands and options exist; `--help` runs; a manifest
    from the repository parses."""
    from modeleval.cli import main

    command: click.Command = main
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"modeleval has no command {name!r} here"
        command = command.commands[name]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    for word in rest:
        if word.startswith("-"):
            assert word.split("=")[0] in options, f"modeleval {command.name}: no option {word}"
        elif word.endswith(".yaml") and not word.startswith("/"):
            parse_manifest((ROOT / word).read_bytes(), word)
    if rest[-1:] == ["--help"]:
        done = CliRunner().invoke(main, args)
        assert done.exit_code == 0, done.output


def _schema_has(path: str) -> bool:
    import json

    node = json.loads((CHART / "values.schema.json").read_text())
    for key in path.split("."):
        node = node.get("properties", {}).get(key)
        if node is None:
            return False
    return True


def check_helm(args: list[str]) -> None:
    for before, word in zip(["", *args], args):
        if word.startswith("charts/"):
            assert (ROOT / word / "Chart.yaml").exists(), word
        if before == "--set":
            key = word.split("=", 1)[0]
            assert _schema_has(key), f"helm --set {key}: not a value of the chart"


KUBECTL_VALUE_FLAGS = {"-n", "--namespace", "-l", "--selector", "-o", "--output", "-f",
                       "--field-selector", "--from-literal", "--dry-run", "--timeout", "-c"}
BUILTIN_RESOURCES = {"pods", "pod", "nodes", "secret", "secrets", "deployment", "deployments",
                     "endpoints", "svc", "services", "events", "namespace", "namespaces"}


@functools.cache
def crd_resource_names() -> set[str]:
    names = set()
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        spec_names = crd["spec"]["names"]
        names |= {spec_names["plural"], spec_names["singular"], *spec_names.get("shortNames", [])}
    return names


def check_kubectl(args: list[str]) -> None:
    positional = [w for before, w in zip(["", *args], args)
                  if not w.startswith("-") and before not in KUBECTL_VALUE_FLAGS]
    if positional[:1] in (["get"], ["describe"]):
        for resource in positional[1].split("/")[0].split(","):
            assert resource in crd_resource_names() | BUILTIN_RESOURCES, f"kubectl: no resource {resource}"
    for before, word in zip(["", *args], args):
        if before == "-f" and word != "-":
            assert (ROOT / word).exists(), f"kubectl -f {word}: no such file"


def check_python(args: list[str]) -> None:
    if args[:2] == ["-m", "venv"]:
        return
    script = ROOT / args[0]
    assert script.exists(), f"python {args[0]}: no such script"
    for word in args[1:]:
        if word.startswith("--"):
            assert f'"{word}"' in script.read_text(), f"{args[0]}: no option {word}"


def check_pip(args: list[str]) -> None:
    assert args[0] == "install", args
    for target in args[1:]:
        extras = re.fullmatch(r"\.(?:\[([a-z,]+)\])?", target)
        assert extras, f"pip install {target}: only this checkout is installed here"
        declared = (ROOT / "pyproject.toml").read_text()
        for extra in filter(None, (extras[1] or "").split(",")):
            assert re.search(rf"^{extra} = \[", declared, re.M), f"no extra {extra}"


def check_shell_function(args: list[str]) -> None:
    """`real_node_namespace`, a step of hack/smoke.sh shown in its transcript."""


HANDLERS = {"make": check_make, "modeleval": check_cli, "helm": check_helm, "kubectl": check_kubectl,
            "python": check_python, "pip": check_pip, "real_node_namespace": check_shell_function}
HARMLESS = {"source", "tail", "head", "base64"}


def check_command(words: list[str]) -> None:
    program = words[0].rsplit("/", 1)[-1]
    if program in HARMLESS:
        return
    program = "python" if re.fullmatch(r"python3?(\.\d+)?", program) else program
    assert program in HANDLERS, f"no check for {words[0]!r}: add one, or tag the block illustrative"
    if program == "real_node_namespace":
        assert "real_node_namespace()" in (ROOT / "hack/smoke.sh").read_text()
    HANDLERS[program](words[1:])


def check_shell(text: str) -> None:
    for words in commands(text):
        check_command(words)


def check_transcript(text: str) -> None:
    """A captured run: its output is what it printed; its commands are checked."""
    check_shell("\n".join(line[2:] for line in text.splitlines() if line.startswith("$ ")))


CHECKS = {("yaml", ""): check_manifest, ("yaml", "helm-values"): check_helm_values,
          ("bash", ""): check_shell, ("console", "transcript"): check_transcript,
          ("javascript", "mongosh"): check_mongosh,
          # Program output and diagrams: neither shell nor YAML.
          ("text", ""): lambda text: None}


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.where for s in SAMPLES])
def test_every_sample_is_checked(sample):
    if sample.tag == "illustrative":
        return
    check = CHECKS.get((sample.lang, sample.tag))
    assert check, (f"{sample.where}: a {sample.lang or 'plain'} block tagged {sample.tag or 'nothing'} "
                   "has no check")
    check(sample.body)


def test_the_samples_were_found():
    kinds = {(s.lang, s.tag) for s in SAMPLES}
    assert {("yaml", ""), ("yaml", "helm-values"), ("bash", ""), ("console", "transcript")} <= kinds
    assert len(SAMPLES) > 20


# --- the checks refuse what is wrong -----------------------------------------------------------

@pytest.mark.parametrize("lang, tag, body, error", [
    ("bash", "", "make no-such-target\n", "no such target"),
    ("bash", "", "modeleval run examples/mslr-ranker.yaml --no-such-flag\n", "no option"),
    ("bash", "", "modeleval evaluate x.yaml\n", "no command"),
    ("bash", "", "helm install m charts/modeleval --set operator.noSuchValue=1\n", "not a value"),
    ("bash", "", "kubectl get notaresource\n", "no resource"),
    ("bash", "", "kubectl apply -f examples/missing.yaml\n", "no such file"),
    ("bash", "", "curl http://example\n", "no check for"),
    ("bash", "", "python bench/engine.py --no-such-option\n", "no option"),
    ("yaml", "helm-values", "operator: {maxJobsPerHead: -1}\n", "minimum"),
    ("yaml", "", "apiVersion: modeleval.dev/v1alpha1\nkind: ModelEvaluation\nmetadata: {name: x}\n"
     "spec: {task: ranking, model: {uri: s3://bucket/m.json}, dataset: {uri: s3://bucket/d.txt}, "
     "metrics: [auc]}\n", "metric"),
    ("yaml", "", "kind: ConfigMap\n", "tag it"),
    ("html", "", "<p>", "has no check"),
])
def test_a_wrong_sample_fails(lang, tag, body, error):
    with pytest.raises((AssertionError, ManifestError, jsonschema.ValidationError,
                        pytest.fail.Exception), match=error):
        test_every_sample_is_checked(Sample("example", lang, tag, body))
