"""Which credentials the operator reads and writes an evaluation's result document with.

The operator's own MongoDB URI (``mongodb_uri``) serves only the databases the platform lists
for the namespace (``mongodb_operator_databases``). Any other database a spec names is read and
written with the namespace's own Secret (``mongodb_secret``, the one its Ray pods write with):
a tenant cannot make the operator write where the tenant itself may not.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from ..api.results import ResultDocument, document_id
from ..api.spec import MongoTarget
from ..api.status import DataDriftStatus
from ..store import MongoResultStore, ResultsStoreError
from .secrets import MONGODB_KEY, MissingCredentials, NamespaceSecrets
from .settings import OperatorSettings

# Mechanisms that authenticate with what the operator's own process has (its cloud identity,
# a Kerberos ticket, an OIDC token, a client certificate on its disk), not with what the URI
# carries: refused in a tenant's URI.
OWN_IDENTITY_MECHANISMS = {"MONGODB-AWS", "MONGODB-OIDC", "GSSAPI", "MONGODB-X509"}
# Options naming a file on the operator's disk (pymongo's tls*File and the ssl_* aliases).
FILE_OPTIONS = {"tlscafile", "tlscertificatekeyfile", "tlscrlfile", "ssl_certfile",
                "ssl_keyfile", "ssl_ca_certs", "ssl_crlfile", "authmechanismproperties"}


def tenant_uri_problem(uri: str) -> str | None:
    """Why a URI from a tenant's Secret must not be used by the operator, or None."""
    options = {key.lower(): value for key, value in parse_qsl(urlsplit(uri).query,
                                                                keep_blank_values=True)}
    mechanism = options.get("authmechanism", "").upper()
    if mechanism in OWN_IDENTITY_MECHANISMS:
        return f"authMechanism={mechanism} would authenticate as the operator, not as the tenant"
    named = sorted(key for key in options if key in FILE_OPTIONS)
    if named:
        return f"the option(s) {', '.join(named)} would use the operator's own files"
    return None


# What the operator reads of a finished attempt's document: every field but the parts status
# never shows (the data's profile, up to 1 MB at 136 features; the curves; the slices), and of
# its drift only what status.drift is made of (each feature's name, PSI and verdict, not its
# other measures and bins). Named field by field (an inclusion, generated from the document's
# model), so a part added to a feature's drift later stays in MongoDB too. One read per
# finished attempt, never a document's full size in the operator's memory (many evaluations
# end together).
LEFT_IN_STORE = ("profile", "curves", "slices", "sliceIntervals", "drift")
DRIFT_READ = ("reference", "drifted", "driftedShare", "features.name", "features.psi",
              "features.drifted")
STATUS_PROJECTION = {
    **{key: 1 for key in (field.alias or name for name, field in ResultDocument.model_fields.items())
       if key not in LEFT_IN_STORE},
    **{f"drift.{path}": 1 for path in DRIFT_READ}}


class StatusResultStore(MongoResultStore):
    """A namespace's result store as the operator reads it for an evaluation's status."""

    def get_for_status(self, uid: str, attempt: int
                       ) -> tuple[ResultDocument | None, DataDriftStatus | None]:
        """The attempt's document without what status never shows (:data:`STATUS_PROJECTION`),
        and its drift as status carries it (None without a reference)."""
        from pymongo.errors import PyMongoError

        try:
            found = self._collection.find_one({"_id": document_id(uid, attempt)},
                                              STATUS_PROJECTION)
        except PyMongoError as error:
            raise ResultsStoreError(f"MongoDB read failed: {str(error).splitlines()[0][:300]}",
                                    public="MongoDB read failed") from None
        if not found:
            return None, None
        drift = found.pop("drift", None)
        return (ResultDocument.from_stored(found),
                DataDriftStatus.of(drift) if drift is not None else None)


class ResultsStores:
    def __init__(self, settings: OperatorSettings, secrets: NamespaceSecrets,
                 timeout_ms: int = 3000):
        self.settings, self.secrets, self.timeout_ms = settings, secrets, timeout_ms

    def operator_databases(self, namespace: str) -> list[str]:
        return [name.replace("{namespace}", namespace)
                for name in self.settings.mongodb_operator_databases]

    def uri(self, namespace: str, database: str) -> str:
        """The URI whose credentials serve ``database`` for the namespace; a
        :class:`ResultsStoreError` whose message a tenant may read says why there is none."""
        assert self.settings.mongodb_uri is not None
        allowed = self.operator_databases(namespace)
        if database in allowed:
            return self.settings.mongodb_uri.get_secret_value()
        name = self.settings.mongodb_secret
        why = (f"spec.output.mongodb.database {database!r} is not one the operator serves for "
               f"namespace {namespace} ({', '.join(allowed) or 'none'}), so it uses the "
               "namespace's own")
        try:
            (uri,) = self.secrets.keys(namespace, name, (MONGODB_KEY,))
        except MissingCredentials as error:
            raise ResultsStoreError(f"{why} {error.message}") from None
        problem = tenant_uri_problem(uri)
        if problem is not None:
            raise ResultsStoreError(f"{why} Secret {namespace}/{name}, whose {MONGODB_KEY} is "
                                    f"refused: {problem}")
        return uri

    def open(self, namespace: str, target: MongoTarget) -> StatusResultStore | None:
        """The store of an evaluation's results; None when the operator has no results store."""
        if self.settings.mongodb_uri is None:
            return None
        return StatusResultStore(self.uri(namespace, target.database), target.database,
                                target.collection, timeout_ms=self.timeout_ms)
