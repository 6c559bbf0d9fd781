"""The evaluation runner: loads a manifest, evaluates it on Ray, records the result.

Cluster mode runs it as the Ray job's entry point (``python -m modeleval.runner``); the CLI's
``run`` and ``demo`` call :func:`run_manifest` in-process. Either way every attempt ends with a
document in the results store: the metrics on success, the reason and message on failure. A
successful attempt's HTML report is written first (beside the result locally, to S3 in a
cluster: see :mod:`modeleval.report_output`), so its document says where it is.

Exit codes: 0 succeeded, 1 the evaluation failed (the last stdout line is a JSON object with
``reason`` and ``message``), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import threading
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .api.reasons import Reason
from .api.results import PROGRESS_MARKER, RESULT_MARKER, ProgressDocument, ResultDocument, document_id
from .api.schedule import SCHEDULE_LABEL
from .api.spec import ModelEvaluation, MongoTarget, checked_uid, format_validation_error
from .engine.dataquality import Reference
from .engine.errors import EvaluationError
from .engine.evaluate import EvaluationResult, Evaluator, Identity
from .engine.storage import Storage
from .report_output import publish_report
from .settings import EngineSettings
from .store import (LocalResultStore, MongoResultStore, ProfiledQuery, ResultStore, ResultsStoreError, replay_spool,
                    write_with_retry)

log = logging.getLogger("modeleval.runner")


class ManifestError(ValueError):
    """A manifest that cannot be read or does not validate; the message names the field."""


MAX_MANIFEST_BYTES = 4 * 2**20  # the API server takes about 3 MiB per object
MAX_DEPTH = 64  # a ModelEvaluation is 5 levels deep; thousands would exhaust the stack
MAX_ALIASES = 256  # YAML aliases can multiply a small text into a huge document


class _ManifestLoader(yaml.SafeLoader):
    """YAML as the API server reads it, and stricter: a repeated key is an error (PyYAML keeps
    the last, silently), as are absurd depth and alias counts."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ManifestError(f"line {self.peek_event().start_mark.line + 1}: more than "
                                    f"{MAX_ALIASES} YAML aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ManifestError(f"line {self.peek_event().start_mark.line + 1}: nested more "
                                    f"than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise ManifestError(f"line {key_node.start_mark.line + 1}: key '{key_node.value}' "
                                    "is repeated (a YAML mapping takes each key once)")
            seen.add(key)
        return super().construct_mapping(node, deep)


# Unicode's control characters (category Cc) but tab, line feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _first_control(text: str) -> int | None:
    """Where the first control character other than tab and line breaks is: a NUL or an
    escape sequence in a manifest is a mistake or an attack, never a value anyone means."""
    match = _CONTROL.search(text)
    return match.start() if match else None


def _control_message(text: str, at: int) -> str:
    return f"control character U+{ord(text[at]):04X} is not allowed"


def _refuse_raw_controls(text: str) -> None:
    at = _first_control(text)
    if at is not None:
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        raise ManifestError(f"line {line}, column {column}: {_control_message(text, at)}")


def _refuse_escaped_controls(root: yaml.Node) -> None:
    """A control character written as an escape ("\\0", "\\x01") in any key or value, the
    first in the text named by its field path and line. Each node is looked at once (aliases
    share nodes, and a chain of them would otherwise be walked exponentially often)."""
    seen: set[int] = set()
    stack: list[tuple[str, yaml.Node]] = [("", root)]
    while stack:
        path, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            at = _first_control(node.value)
            if at is not None:
                raise ManifestError(f"{path or 'document'} (line {node.start_mark.line + 1}): "
                                    f"{_control_message(node.value, at)}")
        stack.extend(reversed(_children(path, node)))


def _children(path: str, node: yaml.Node) -> list[tuple[str, yaml.Node]]:
    """A collection node's keys and values with their field paths, in the text's order."""
    if isinstance(node, yaml.SequenceNode):
        return [(f"{path}[{i}]", item) for i, item in enumerate(node.value)]
    if not isinstance(node, yaml.MappingNode):
        return []
    children = []
    for key, value in node.value:
        name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
        children += [(f"{path + ': ' if path else ''}a key", key),
                     (f"{path}.{name}" if path else name, value)]
    return children


def _documents(text: str | bytes, source: str) -> list[Any]:
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{source}: larger than {MAX_MANIFEST_BYTES // 2**20} MiB")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ManifestError(f"{source}: not UTF-8 text (byte 0x{text[error.start]:02x} at "
                                f"offset {error.start})") from None
    try:
        _refuse_raw_controls(text)
        loader = _ManifestLoader(text)
    except ManifestError as error:
        raise ManifestError(f"{source}: {error}") from None
    except yaml.YAMLError as error:  # a character YAML refuses (checked before parsing)
        raise ManifestError(f"{source}: not valid YAML ({str(error).splitlines()[0]})") from None
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            _refuse_escaped_controls(node)
            documents.append(loader.construct_document(node))
        return documents
    except ManifestError as error:
        raise ManifestError(f"{source}: {error}") from None
    except yaml.YAMLError as error:
        raise ManifestError(f"{source}: not valid YAML ({str(error).splitlines()[0]})") from None
    except RecursionError:  # a safety net: MAX_DEPTH stops nesting long before the stack ends
        raise ManifestError(f"{source}: nested too deeply") from None
    finally:
        loader.dispose()


def parse_manifest(text: str | bytes, source: str = "manifest") -> ModelEvaluation:
    """The one ModelEvaluation in a YAML text or file content (other kinds, e.g. Secrets, are
    skipped). Every problem is a one-line ManifestError naming the field, never a traceback."""
    documents = [d for d in _documents(text, source) if d is not None]
    evaluations = [d for d in documents if isinstance(d, dict) and d.get("kind") == "ModelEvaluation"]
    if not evaluations:
        raise ManifestError(f"{source}: no document with kind: ModelEvaluation")
    if len(evaluations) > 1:
        raise ManifestError(f"{source}: {len(evaluations)} ModelEvaluations; run one at a time")
    try:
        return ModelEvaluation.model_validate(evaluations[0])
    except ValidationError as error:
        raise ManifestError(f"{source}: {format_validation_error(error)}") from None


def result_store(settings: EngineSettings, target: MongoTarget) -> ResultStore:
    if settings.mongodb_uri is not None:
        return MongoResultStore(settings.mongodb_uri.get_secret_value(), target.database,
                                target.collection, settings.mongodb_timeout_ms)
    return LocalResultStore(settings.results_dir)


def failure_document(identity: Identity, manifest: ModelEvaluation, error: EvaluationError) -> ResultDocument:
    document = ResultDocument.failure(identity.uid, identity.attempt, identity.name,
                                      identity.namespace, Reason(error.reason), error.message,
                                      error.retryable, manifest.spec.model.uri,
                                      manifest.spec.dataset.uri)
    document.schedule = schedule_of(manifest)
    return document


def schedule_of(manifest: ModelEvaluation) -> str | None:
    """The EvaluationSchedule that created the evaluation: its children carry its name in a
    label (the operator passes it on in the job's manifest)."""
    return (manifest.metadata.labels or {}).get(SCHEDULE_LABEL)


def find_reference(manifest: ModelEvaluation, identity: Identity,
                   store: ResultStore) -> Reference | None:
    """``spec.dataQuality.reference`` as this job finds it: a dataset URI (the engine profiles
    it), or a succeeded evaluation's recorded profile, looked up in this evaluation's own
    namespace only: by name, or among its schedule's runs (the first, or the one before this)."""
    quality = manifest.spec.data_quality
    wanted = quality.reference if quality is not None else None
    if wanted is None:
        return None
    if wanted.uri is not None:
        return Reference(name=wanted.uri, uri=wanted.uri)
    where = f"namespace {identity.namespace}" if identity.namespace else "the local results"
    if wanted.evaluation is not None:
        name = f"evaluation {wanted.evaluation}"
        query = ProfiledQuery(identity.namespace, name=wanted.evaluation,
                              exclude_uid=identity.uid)
    else:
        schedule = schedule_of(manifest)
        if schedule is None:
            return Reference(name=f"schedule: {wanted.schedule}", missing=(
                f"dataQuality.reference.schedule: {wanted.schedule} names a run of the "
                "EvaluationSchedule that created this evaluation, and no schedule created it"))
        name = f"the {wanted.schedule} run of schedule {schedule}"
        query = ProfiledQuery(identity.namespace, schedule=schedule,
                              oldest=wanted.schedule == "first", exclude_uid=identity.uid)
    try:
        found = store.find_profiled(query)
    except ResultsStoreError as error:
        raise EvaluationError(f"dataQuality.reference ({name}): the result store could not be "
                              f"read: {error.public}", Reason.ResultsStoreUnavailable,
                              retryable=True) from None
    if found is None:
        return Reference(name=name, expected=wanted.schedule is None, missing=(
            f"{name}: no succeeded evaluation with a recorded profile in {where}"))
    return Reference(name=f"{name} (uid {found.uid}, attempt {found.attempt})",
                     profile=found.profile)


def run_manifest(manifest: ModelEvaluation, identity: Identity, settings: EngineSettings | None = None,
                 progress: Callable[[int, int, str], None] | None = None,
                 store: ResultStore | None = None, local: bool = True) -> EvaluationResult:
    """Evaluates and records one attempt; raises EvaluationError after recording a failure.
    ``local``: the report goes beside the result (the CLI); else to S3 (a cluster's job)."""
    settings = settings or EngineSettings()
    store = store or result_store(settings, manifest.spec.output.mongodb)
    spool = settings.results_dir / "spool"
    try:
        replay_spool(store, spool)  # results kept while the store was down go first
    except ResultsStoreError as error:
        log.warning("spooled results not replayed yet: %s", error.message)
    try:
        reference = find_reference(manifest, identity, store)
        result = Evaluator(manifest.spec, identity, settings, progress,
                           reference=reference).run()
    except EvaluationError as error:
        _record(store, failure_document(identity, manifest, error), spool)
        raise
    result.schedule = schedule_of(manifest)
    if settings.report:
        add_report(result, manifest, settings, local)
    _record(store, result.document(), spool)
    return result


def add_report(result: EvaluationResult, manifest: ModelEvaluation, settings: EngineSettings,
               local: bool) -> None:
    """Writes the attempt's report before its document is stored, so the document says where
    the report is, or why there is none (a warning: the evaluation itself still succeeded)."""
    started = time.perf_counter()
    outcome = publish_report(result.document(), manifest.spec, Storage.from_settings(settings),
                             settings.results_dir if local else None)
    result.report_uri, result.report_error = outcome.uri, outcome.error
    if outcome.warning:
        result.warnings.append(outcome.warning)
    result.timings["writeReport"] = round(time.perf_counter() - started, 4)


def _record(store: ResultStore, document: ResultDocument, spool: Path) -> None:
    """Writes the attempt's document, retrying with backoff. If the store stays down it is kept
    twice: in the spool (the next job on this node replays it) and in the job's log, from which
    the operator stores it when the store is back."""
    if not write_with_retry(store, document, spool):
        print(document.log_line(), flush=True)


class ProgressReporter:
    """Sends the latest progress to the store from a thread of its own, at most once a second,
    so a slow or absent store never slows the evaluation (progress is best effort)."""

    def __init__(self, store: MongoResultStore, identity: Identity, interval: float = 1.0):
        self.store, self.identity, self.interval = store, identity, interval
        self._latest: tuple[int, int, str] | None = None
        self._changed = threading.Event()
        threading.Thread(target=self._run, name="progress", daemon=True).start()

    def update(self, done: int, total: int, unit: str) -> None:
        self._latest = (done, total, unit)
        self._changed.set()

    def _run(self) -> None:
        while True:
            self._changed.wait()
            self._changed.clear()
            if self._latest is not None:
                done, total, unit = self._latest
                self.store.report_progress(ProgressDocument(
                    _id=document_id(self.identity.uid, self.identity.attempt), done=done,
                    total=total, unit=unit))
            time.sleep(self.interval)


def _uid(value: str) -> str:
    try:
        return checked_uid(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeleval.runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, help="a ModelEvaluation YAML file")
    source.add_argument("--manifest-b64", help="the manifest as base64 (what the operator passes)")
    parser.add_argument("--uid", default=None, type=_uid)
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--allow-pickle", action="store_true",
                        help="the platform's permission to load pickle models (the operator "
                        "passes it only when its policy allows them); without it no pickle is "
                        "loaded, whatever the manifest says")
    parser.add_argument("--no-report", action="store_true",
                        help="write no HTML report and compute no curves (the platform turned "
                        "reports off)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    try:
        content = (args.manifest.read_bytes() if args.manifest
                   else base64.b64decode(args.manifest_b64, validate=True))
        manifest = parse_manifest(content, str(args.manifest) if args.manifest else "manifest")
    except (OSError, ValueError) as error:
        print(RESULT_MARKER + json.dumps({"status": "Failed", "reason": Reason.InvalidSpec,
                                          "message": str(error)}), flush=True)
        return 2
    identity = Identity(uid=args.uid or manifest.metadata.uid or str(uuid.uuid4()),
                        attempt=args.attempt, name=manifest.metadata.name,
                        namespace=manifest.metadata.namespace)

    # Not from the environment: only the operator's command line grants it.
    settings = EngineSettings(allow_pickle=args.allow_pickle,
                              **({"report": False} if args.no_report else {}))
    store = result_store(settings, manifest.spec.output.mongodb)
    reporter = ProgressReporter(store, identity) if isinstance(store, MongoResultStore) else None

    def report(done: int, total: int, unit: str) -> None:
        print(PROGRESS_MARKER + json.dumps({"done": done, "total": total, "unit": unit}),
              flush=True)
        if reporter is not None:
            reporter.update(done, total, unit)

    try:
        result = run_manifest(manifest, identity, settings, progress=report, store=store,
                              local=False)
    except EvaluationError as error:
        print(RESULT_MARKER + json.dumps({"status": "Failed", **error.to_dict()}), flush=True)
        return 1
    print(RESULT_MARKER + json.dumps({"status": "Succeeded", "metrics": result.metrics,
                                      "rows": result.rows, "report": result.report_uri}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
