"""Where an attempt's HTML report goes, and writing it there.

Locally (``modeleval run`` and ``demo``) it goes beside the result, in the results directory.
In a cluster (the Ray job's runner) it goes to S3: under ``spec.output.reportUri``, else next
to the predictions, else under ``modeleval-reports/<namespace>/`` in the dataset's bucket (as
the parsed-dataset cache does), written with the same S3 credentials as the predictions.

A report that cannot be written (S3 refuses, no such bucket, a full disk, a rendering error)
costs the evaluation nothing: the document keeps its metrics, says why in ``report_error`` and
in a warning, and the operator shows it as the ReportWritten=False condition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .api.results import ResultDocument
from .api.spec import ModelEvaluationSpec
from .engine.errors import EvaluationError
from .engine.storage import Storage, join_uri, parse_s3

log = logging.getLogger(__name__)

REPORTS_PREFIX = "modeleval-reports"


class ReportNotWritten(Exception):
    """Why a report could not be written, in words a status condition can carry."""


def report_file_name(document: ResultDocument) -> str:
    """An S3 report's object name: readable in a bucket listing, one per attempt."""
    return f"{document.name}-{document.uid}-{document.attempt}.html"


def local_report_path(results_dir: Path, uid: str, attempt: int) -> Path:
    """A local report's file: beside the result, named as the result store names its files."""
    return Path(results_dir).expanduser().resolve() / f"{uid}-{attempt}.html"


def report_uri(spec: ModelEvaluationSpec, document: ResultDocument,
               results_dir: Path | None) -> str:
    """Where the report of ``document`` goes: ``results_dir`` given means local mode (beside
    the result), None a cluster's runner (S3)."""
    if spec.output.report_uri:
        return join_uri(spec.output.report_uri, report_file_name(document))
    if results_dir is not None:
        return local_report_path(results_dir, document.uid, document.attempt).as_uri()
    if spec.output.predictions_uri:
        return join_uri(spec.output.predictions_uri, report_file_name(document))
    if spec.dataset.uri.startswith("s3://"):
        bucket = parse_s3(spec.dataset.uri).bucket
        return (f"s3://{bucket}/{REPORTS_PREFIX}/{document.namespace or 'default'}/"
                f"{report_file_name(document)}")
    raise ReportNotWritten("no S3 location for the report: set spec.output.reportUri")


def render_report(document: ResultDocument) -> bytes:
    """The report's HTML. Any failure to render is a ReportNotWritten naming it."""
    from .report import render

    try:
        return render(document).encode()
    except Exception as error:  # noqa: BLE001 - a report's bug must not fail the evaluation
        log.exception("the report of %s could not be rendered", document.id)
        raise ReportNotWritten(f"the report could not be rendered ({type(error).__name__}: "
                               f"{str(error)[:200]})") from error


def write_report(storage: Storage, uri: str, html: bytes) -> None:
    """Writes a rendered report to ``uri`` (file:// or s3://); ReportNotWritten says why not."""
    try:
        storage.write(uri, html)
    except EvaluationError as error:
        raise ReportNotWritten(error.message) from error
    except OSError as error:
        raise ReportNotWritten(f"{uri}: {error.strerror or error}") from error


@dataclass(frozen=True)
class ReportOutcome:
    """Where the report was written, or why it was not (exactly one is set)."""

    uri: str | None = None
    error: str | None = None

    @property
    def warning(self) -> str | None:
        return f"the report was not written: {self.error}" if self.error else None


def publish_report(document: ResultDocument, spec: ModelEvaluationSpec, storage: Storage,
                   results_dir: Path | None) -> ReportOutcome:
    """Renders the report of ``document`` and writes it where :func:`report_uri` says. Never
    raises: a report that could not be written is an outcome that says why."""
    try:
        uri = report_uri(spec, document, results_dir)
        write_report(storage, uri, render_report(document.model_copy(update={"report_uri": uri})))
        return ReportOutcome(uri=uri)
    except ReportNotWritten as error:
        log.warning("report not written: %s", error)
        return ReportOutcome(error=str(error))
