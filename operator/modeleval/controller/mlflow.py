"""The platform's MLflow server, through its REST API: the client every use shares, and the model
registry's calls: resolve a ``models:/`` URI to the version's artefact in S3, list a model's
versions (a schedule's trigger), set an alias on a version (promotion). Runs are
``tracking.py``'s.

Every request carries the evaluation namespace's own credentials (a Secret in that namespace,
``mlflow_secret``): the operator has none of its own, so a tenant reaches only what its own
MLflow user may. The REST API over httpx (which the operator already uses) rather than the
MLflow client: a handful of calls do not justify the client's dependencies in the operator's
image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from ..api.reasons import Reason
from ..api.registry import RegistryRef, ResolvedModel
from .observed import RegistryAnswer
from .secrets import MissingCredentials, NamespaceSecrets
from .settings import OperatorSettings

API = "/api/2.0/mlflow"
USERNAME, PASSWORD, TOKEN = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                             "MLFLOW_TRACKING_TOKEN")
SERVED_ARTIFACTS = "mlflow-artifacts:/"
MESSAGE_CHARS = 300  # of the server's own words in a condition
NO_SERVER = "this operator has no MLflow server (the chart's mlflow.trackingUri is not set)"
VERSIONS_PAGE = 1000  # versions asked for per search request
READY = "READY"  # a version whose registration finished (not PENDING_ or FAILED_REGISTRATION)


class RegistryError(Exception):
    """A request the MLflow server did not serve: the reason, whether asking again may help
    (the server did not answer, or answered 5xx) and MLflow's own ``error_code`` when it said
    one (RESOURCE_DOES_NOT_EXIST, ...)."""

    def __init__(self, reason: Reason, message: str, retryable: bool = False,
                 code: str | None = None):
        super().__init__(message)
        self.reason, self.message, self.retryable, self.code = reason, message, retryable, code


@dataclass(frozen=True)
class Credentials:
    """What the namespace's Secret holds: a user and password (basic auth) or a token."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def auth(self) -> httpx.BasicAuth | None:
        return httpx.BasicAuth(self.username, self.password) if self.username else None

    def digest(self) -> str:
        """Tells one user's credentials from another's without keeping them (a cache key)."""
        return hashlib.sha256("\0".join((self.username or "", self.password or "",
                                          self.token or "")).encode()).hexdigest()


def namespace_credentials(secrets: NamespaceSecrets, namespace: str, name: str) -> Credentials:
    """The namespace's MLflow credentials; :class:`RegistryError` (RegistryAccessDenied) names
    what is missing."""
    try:
        found = secrets.values(namespace, name)
        if found is None:
            raise MissingCredentials(namespace, name, (USERNAME, PASSWORD), "not found")
        if found.get(TOKEN):
            return Credentials(token=found[TOKEN])
        username, password = secrets.keys(namespace, name, (USERNAME, PASSWORD))
        return Credentials(username=username, password=password)
    except MissingCredentials as error:
        raise RegistryError(Reason.RegistryAccessDenied, f"no MLflow credentials: "
                            f"{error.message} (or {TOKEN})") from None


class MlflowClient:
    """One namespace's client of the MLflow server at ``base_url`` (its REST API and its
    artefact proxy), with that namespace's credentials; paths from the server's root."""

    def __init__(self, base_url: str, credentials: Credentials, timeout: float,
                 transport: httpx.BaseTransport | None = None):
        self._http = httpx.Client(base_url=base_url.rstrip("/"), auth=credentials.auth(),
                                  headers=credentials.headers(), timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, what: str, **kwargs) -> dict:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise RegistryError(Reason.RegistryUnavailable, f"the MLflow server did not answer "
                                f"({what}): {type(error).__name__}: {error}", True) from None
        if response.is_success:
            return response.json() if response.content else {}
        raise refusal(response, what)


class MlflowRegistry(MlflowClient):
    """One namespace's view of the model registry."""

    def model_version(self, ref: RegistryRef) -> dict:
        """The version a reference names (an alias: the version it points to now)."""
        if ref.alias is not None:
            found = self._call("GET", f"{API}/registered-models/alias", str(ref),
                               params={"name": ref.name, "alias": ref.alias})
        else:
            found = self._call("GET", f"{API}/model-versions/get", str(ref),
                               params={"name": ref.name, "version": ref.version})
        return found.get("model_version") or {}

    def model_versions(self, name: str, limit: int) -> list[dict]:
        """The registered model's versions whose registration finished (READY), at most
        ``limit``, newest first. A model that does not exist is a ModelNotFound error, not an
        empty list (a typo would otherwise wait for versions that never come)."""
        self._call("GET", f"{API}/registered-models/get", f"registered model {name}",
                   params={"name": name})
        found: list[dict] = []
        token = None
        while len(found) < limit:
            params = {"filter": f"name='{name}'", "order_by": "creation_timestamp DESC",
                      "max_results": min(VERSIONS_PAGE, limit - len(found))}
            if token:
                params["page_token"] = token
            page = self._call("GET", f"{API}/model-versions/search", f"versions of {name}",
                              params=params)
            found += [version for version in page.get("model_versions") or []
                      if version.get("status", READY) == READY]
            token = page.get("next_page_token")
            if not token:
                break
        return found[:limit]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call("POST", f"{API}/registered-models/alias", f"alias {alias} of {name}",
                   json={"name": name, "alias": alias, "version": version})


def refusal(response: httpx.Response, what: str) -> RegistryError:
    """What a non-2xx answer means for the evaluation."""
    try:
        found = response.json()
        said, error_code = str(found.get("message") or response.text), found.get("error_code")
    except (ValueError, AttributeError):
        said, error_code = response.text, None
    said = said.strip()[:MESSAGE_CHARS]
    code = response.status_code
    if code in (401, 403):
        return RegistryError(Reason.RegistryAccessDenied, f"the MLflow server refused the "
                             f"namespace's credentials ({what}: HTTP {code})", code=error_code)
    if code >= 500 or code == 429:
        return RegistryError(Reason.RegistryUnavailable, f"the MLflow server answered HTTP "
                             f"{code} ({what}): {said}", True, error_code)
    # MLflow answers 404 for an unknown model or version, 400 for an unknown alias.
    return RegistryError(Reason.ModelNotFound, f"{what}: {said or f'HTTP {code}'}",
                         code=error_code)


def artifact_uri(version: dict, destination: str | None) -> str:
    """The S3 URI of a version's artefact: its source (or, for a logged model, its storage
    location) when that is s3://, or a served artefact (mlflow-artifacts:/PATH) under the
    server's artifacts destination."""
    for where in (version.get("source"), version.get("storage_location")):
        if not where:
            continue
        if where.startswith("s3://"):
            return where
        if where.startswith(SERVED_ARTIFACTS) and destination:
            return destination.rstrip("/") + "/" + where[len(SERVED_ARTIFACTS):].lstrip("/")
    label = f"models:/{version.get('name')}/{version.get('version')}"
    raise RegistryError(Reason.ModelNotFound, f"{label}: its artefact "
                        f"({version.get('source') or 'no source'}) is not in S3" +
                        ("" if destination else " (mlflow-artifacts:/ sources need the chart's "
                         "mlflow.artifactsDestination)"))


def resolve(registry: MlflowRegistry, field: str, uri: str,
            destination: str | None) -> ResolvedModel:
    """One models:/ URI, resolved to its version and artefact."""
    ref = RegistryRef.parse(uri)
    if ref is None:
        raise RegistryError(Reason.InvalidSpec, f"{field}.uri: {uri} is not a models:/ URI")
    version = registry.model_version(ref)
    if not version.get("version"):
        raise RegistryError(Reason.ModelNotFound, f"{ref}: the registry answered no version")
    return ResolvedModel(field=field, uri=uri, name=ref.name, version=str(version["version"]),
                         artifact_uri=artifact_uri(version, destination))


Client = TypeVar("Client", bound=MlflowClient)


class Registries:
    """Opens a namespace's client of the platform's MLflow server (the registry's, or another
    kind) with that namespace's credentials."""

    def __init__(self, settings: OperatorSettings, secrets: NamespaceSecrets,
                 transport: Callable[[], httpx.BaseTransport | None] = lambda: None):
        self.settings, self.secrets, self._transport = settings, secrets, transport

    def open(self, namespace: str, kind: type[Client] = MlflowRegistry) -> Client:
        if not self.settings.mlflow_tracking_uri:
            raise RegistryError(Reason.RegistryNotConfigured, NO_SERVER)
        credentials = namespace_credentials(self.secrets, namespace, self.settings.mlflow_secret)
        return kind(self.settings.mlflow_tracking_uri, credentials, self.settings.mlflow_timeout,
                    self._transport())


def resolve_models(registries: Registries, namespace: str,
                   pending: list[tuple[str, str]]) -> RegistryAnswer:
    """Every (field, models:/ URI) resolved with the namespace's credentials, or the first
    problem met."""
    try:
        registry = registries.open(namespace)
    except RegistryError as error:
        return RegistryAnswer(problem=(error.reason, error.message), retryable=error.retryable)
    resolved = []
    try:
        for field, uri in pending:
            try:
                resolved.append(resolve(registry, field, uri,
                                        registries.settings.mlflow_artifacts_destination))
            except RegistryError as error:
                return RegistryAnswer(problem=(error.reason, f"{field}.uri: {error.message}"),
                                      retryable=error.retryable)
    finally:
        registry.close()
    return RegistryAnswer(resolved=tuple(resolved))
