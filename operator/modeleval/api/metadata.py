"""Object metadata as the API server checks it (k8s.io/apimachinery's validation): label keys
and values, annotation keys and their total size. `modeleval run` reads the same manifests as
`kubectl apply`; what the server would refuse, the CLI refuses too, with the server's words.
"""

from __future__ import annotations

import re

# apimachinery/pkg/util/validation: IsQualifiedName, IsDNS1123Subdomain, IsValidLabelValue.
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
NAME_PART_MAX = 63
PREFIX_MAX = 253
LABEL_VALUE_MAX = 63
# apimachinery/pkg/api/validation: TotalAnnotationSizeLimitB, keys and values together (the
# message is the v1.35 API server's).
ANNOTATIONS_MAX_BYTES = 256 * 2**10

_NAME_CHARS = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
               "with an alphanumeric character")


def qualified_name_problems(key: str) -> list[str]:
    """Why ``key`` is not a qualified name ([DNS-subdomain prefix/]name), as the API server
    says it; empty when it is one."""
    parts = key.split("/")
    if len(parts) > 2:
        return ["a qualified name " + _NAME_CHARS + " with an optional DNS subdomain prefix and "
                "'/' (e.g. 'example.com/MyName')"]
    problems = []
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            problems.append("prefix part must be non-empty")
        elif len(prefix) > PREFIX_MAX:
            problems.append(f"prefix part must be no more than {PREFIX_MAX} characters")
        elif not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            problems.append("prefix part a lowercase RFC 1123 subdomain must consist of lower "
                            "case alphanumeric characters, '-' or '.', and must start and end "
                            "with an alphanumeric character")
    name = parts[-1]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > NAME_PART_MAX:
        problems.append(f"name part must be no more than {NAME_PART_MAX} characters")
    elif not _QUALIFIED_NAME.fullmatch(name):
        problems.append("name part " + _NAME_CHARS)
    return problems


def label_value_problems(value: str) -> list[str]:
    """Why ``value`` is not a label value; empty when it is one (the empty string is)."""
    problems = []
    if len(value) > LABEL_VALUE_MAX:
        problems.append(f"must be no more than {LABEL_VALUE_MAX} characters")
    if value and not _QUALIFIED_NAME.fullmatch(value):
        problems.append("a valid label must be an empty string or consist of alphanumeric "
                        "characters, '-', '_' or '.', and must start and end with an "
                        "alphanumeric character")
    return problems


def _invalid(value: str, problems: list[str]) -> str:
    return f"Invalid value: {value!r}: {'; '.join(problems)}"


def labels_problem(labels: dict[str, str]) -> str | None:
    """Why the API server would refuse these labels, in its words (``Invalid value: 'a b':
    ...``, for metadata.labels), or None."""
    for key, value in labels.items():
        problems = qualified_name_problems(key)
        if problems:
            return _invalid(key, problems)
        problems = label_value_problems(value)
        if problems:
            return _invalid(value, problems)
    return None


def annotations_problem(annotations: dict[str, str]) -> str | None:
    """Why the API server would refuse these annotations (a key that is not a qualified name,
    checked lowercased as it does; more than 256 KiB in all), or None."""
    for key in annotations:
        problems = qualified_name_problems(key.lower())
        if problems:
            return _invalid(key, problems)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > ANNOTATIONS_MAX_BYTES:
        return (f"Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes (keys and values "
                f"together; these have {size})")
    return None
