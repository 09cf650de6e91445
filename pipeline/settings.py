"""Reading a TOML table's values: typed, named in messages by their key, unknown keys
refused, so a typo never silently falls back to a default. Shared by the job
configuration (pipeline.config) and the input formats (pipeline.inputs)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.errors import ConfigError

# Plain, unquoted identifiers that every database accepts as typed, within Oracle's
# pre-12.2 limit of 30 bytes. Anything else (quotes, spaces, semicolons) is refused here,
# before any name reaches SQL.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,29}$")


def section(data: Mapping[str, Any], name: str, allowed: set[str]) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}]: expected a table")
    refuse_unknown(table, name, allowed)
    return table


def refuse_unknown(data: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]}; expected one of {sorted(allowed)}")


MISSING = object()
ABSENT = object()  # an optional key without a default: None when absent


def get(data: Mapping[str, Any], key: str, kind: Any, default: Any = MISSING) -> Any:
    value = data.get(key.rsplit(".", 1)[-1], MISSING)
    if value is MISSING:
        if default is MISSING or default is None:
            raise ConfigError(f"{key}: missing")
        return None if default is ABSENT else default
    # bool is an int in Python; refuse it where a count is wanted
    wants_bool = kind is bool or (isinstance(kind, tuple) and bool in kind)
    if not isinstance(value, kind) or (isinstance(value, bool) and not wants_bool):
        raise ConfigError(f"{key}: expected {_kind_name(kind)}, got {value!r}")
    return value


def identifier(data: Mapping[str, Any], key: str) -> str:
    name = get(data, key, str)
    if not IDENTIFIER.fullmatch(name):
        raise ConfigError(f"{key}: {name!r} is not a plain identifier "
                          "(lower-case letter, then letters, digits or _, at most 30)")
    return name


def _kind_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return {str: "a string", int: "an integer", bool: "true or false"}.get(kind, kind.__name__)
