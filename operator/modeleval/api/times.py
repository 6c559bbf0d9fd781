"""Times as Kubernetes writes them (RFC 3339, seconds, ``Z``): the one parser and writer of
metadata and status times."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema


def rfc3339(moment: datetime) -> str:
    """Seconds precision, UTC, ``Z``: how Kubernetes writes times."""
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    """A time as Kubernetes writes it (RFC 3339, ``Z``), aware; None for none. The one parser
    of metadata and status times."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


Time = Annotated[datetime, PlainSerializer(rfc3339, return_type=str, when_used="json"),
                 WithJsonSchema({"type": "string", "format": "date-time"})]
