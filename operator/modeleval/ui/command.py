"""`modeleval ui` as a command of its own: it imports neither the engine nor the CLI's tables,
so the chart's dashboard runs it from the operator's image (no numpy, no Arrow, no Ray) as
`python -m modeleval.ui`, and `modeleval ui` is the same command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..settings import EngineSettings
from ..store import ResultsStoreError

# Where Kubernetes mounts a pod's ServiceAccount token (only when the pod asks for it: the
# chart's dashboard does with dashboard.livePhase).
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _fail(message: str) -> None:
    click.echo(click.style("error:", fg="red", bold=True) + f" {message}", err=True)
    sys.exit(1)


def _ui_token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as error:
            _fail(f"--token-file {token_file}: {error.strerror or error}")
        if not token:
            _fail(f"--token-file {token_file}: the file is empty")
        return token
    return os.environ.get("MODELEVAL_UI_TOKEN") or None


def runs_in_cluster(kubeconfig: Path | None, environ: dict[str, str] | os._Environ = os.environ,
                    token: Path = SERVICE_ACCOUNT_TOKEN) -> bool:
    """Whether the live phase comes from the pod's own ServiceAccount: no kubeconfig given,
    inside a pod (the API server's address in the environment) whose token is mounted."""
    return kubeconfig is None and bool(environ.get("KUBERNETES_SERVICE_HOST")) and token.is_file()


@click.command()
@click.option("--mongo-uri", metavar="URI",
              help="Read results from this MongoDB (default: MODELEVAL_MONGODB_URI, unless "
              "--results-dir is given). A read-only "
              "user suffices: the dashboard only reads (find, count, distinct).")
@click.option("--database", default="modeleval", show_default=True, help="With --mongo-uri.")
@click.option("--collection", default="results", show_default=True, help="With --mongo-uri.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Read the local results directory instead (default, without a MongoDB URI: "
              "the one `modeleval run` writes to).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Show each evaluation's live phase from this cluster (read-only: lists "
              "ModelEvaluations where you may). In a pod with its ServiceAccount token mounted "
              "and no kubeconfig: that ServiceAccount's (in-cluster config).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Require this token (or env MODELEVAL_UI_TOKEN): 'Authorization: Bearer "
              "<token>' or a visit to /login?token=<token> (which sets a cookie).")
def ui(mongo_uri: str | None, database: str, collection: str, results_dir: Path | None,
       kubeconfig: Path | None, host: str, port: int, token_file: Path | None) -> None:
    """Serve the read-only web dashboard of the stored results.

    Every page only reads: a MongoDB user with the read role on DATABASE is enough. For a
    fast list of many results, give the collection the indexes the docs list (Reports and the
    dashboard; the dashboard creates none)."""
    import uvicorn

    from .app import create_app
    from .config import UIConfig

    if mongo_uri and results_dir:
        _fail("give --mongo-uri or --results-dir, not both")
    settings = EngineSettings()
    if not mongo_uri and not results_dir and settings.mongodb_uri is not None:
        mongo_uri = settings.mongodb_uri.get_secret_value()
    try:
        config = UIConfig(mongo_uri=mongo_uri or None, database=database, collection=collection,
                          results_dir=None if mongo_uri else (results_dir
                                                              or settings.results_dir),
                          kubeconfig=kubeconfig, in_cluster=runs_in_cluster(kubeconfig),
                          token=_ui_token(token_file))
        app = create_app(config)
    except (ValueError, ResultsStoreError) as error:
        _fail(str(error))
    where = f"MongoDB database {database}" if mongo_uri else f"{config.results_dir}"
    click.echo(f"modeleval ui: http://{host}:{port}/ (results: {where}"
               + (", token required" if config.token else "")
               + (", live phase: in-cluster" if config.in_cluster else "") + ")", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
