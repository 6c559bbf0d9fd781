"""Models named in an MLflow model registry: ``models:/<name>/<version>`` or
``models:/<name>@<alias>`` (MLflow's own model URIs). The operator resolves each to the
version's artefact in S3 before the job is submitted, and pins what it resolved in status
(:class:`ResolvedModel`), so every attempt of an evaluation scores the same version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# A registered model's name as these URIs may carry it: letters, digits, '.', '_' and '-' (MLflow
# allows more, but a name with '/', '@' or spaces would not read back as one URI).
MODEL_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}"
VERSION = r"[1-9][0-9]{0,9}"
# MLflow's aliases: letters, digits, '_' and '-'.
ALIAS = r"[A-Za-z][A-Za-z0-9_\-]{0,254}"
MODELS_URI = rf"models:/{MODEL_NAME}(/{VERSION}|@{ALIAS})"
ALIAS_PATTERN = rf"^{ALIAS}$"
MODEL_NAME_PATTERN = rf"^{MODEL_NAME}$"
_PARSE = re.compile(rf"^models:/(?P<name>{MODEL_NAME})(/(?P<version>{VERSION})|@(?P<alias>{ALIAS}))$")


@dataclass(frozen=True)
class RegistryRef:
    """A model as a ``models:/`` URI names it: a version, or an alias that points to one."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, uri: str) -> "RegistryRef | None":
        """The reference a ``models:/`` URI makes; None for any other URI."""
        found = _PARSE.match(uri)
        if found is None:
            return None
        return cls(found["name"], found["version"], found["alias"])

    def __str__(self) -> str:
        return f"models:/{self.name}/{self.version}" if self.version else \
            f"models:/{self.name}@{self.alias}"


def is_registry_uri(uri: str) -> bool:
    return uri.startswith("models:/")


class PromotionStatus(BaseModel):
    """spec.promote as the operator carried it out: which version got the alias, and whether
    it is done (a promoted evaluation never sets it again, whatever happens after)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    alias: str = Field(description="The alias set (spec.promote.alias).")
    name: str = Field(description="The registered model.")
    version: str = Field(description="The candidate's version (status.resolvedModels).")
    promoted: bool = Field(False, description="Whether the registry took it (see the Promoted "
                           "condition).")
    tries: int = Field(0, description="Tries the registry did not answer (each asked again "
                       "after a backoff, at most PROMOTION_TRIES in all).")


class ResolvedModel(BaseModel):
    """One ``models:/`` URI of the spec as the operator resolved it, before the first attempt."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    field: str = Field(description="The spec field that names it, e.g. spec.model or "
                       "spec.challengers[0].model.")
    uri: str = Field(description="The models:/ URI as the spec wrote it.")
    name: str = Field(description="The registered model.")
    version: str = Field(description="The version it resolved to (an alias's version at the "
                         "time): every attempt scores this one.")
    artifact_uri: str = Field(alias="artifactURI", description="The version's artefact in S3, "
                              "which the job reads.")
