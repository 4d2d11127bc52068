"""Settings loading shared by the components.

A component declares its settings as a frozen dataclass whose fields have
safe defaults. ``load_settings`` builds one with the precedence
defaults < config file (TOML) < environment < command-line flags, refuses
unknown keys, and converts values to the field's type, so a mistake is
reported at start with the key's name and where it came from.

Nested tables in the file map to fields of type dict; environment variables
are ``PREFIX + FIELD.upper()`` (``MLTRAIL_AGENT_SPOOL_DIR``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def mltrail_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where local data lives: ``$MLTRAIL_HOME``, else ``~/.mltrail``."""
    env = os.environ if environ is None else environ
    return Path(env.get("MLTRAIL_HOME") or Path.home() / ".mltrail")


class SettingsError(ValueError):
    """A setting is unknown or has a value of the wrong kind."""


def _convert(name: str, raw: Any, kind: Any, source: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw is None or raw == "":
            return None
        kind = args[0]
        origin = typing.get_origin(kind)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind is int:
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str:
            if not isinstance(raw, str | Path):
                raise ValueError("expected a string")
            return str(raw)
        if origin in (list, tuple):
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            if typing.get_origin(typing.get_args(kind)[0]) is dict:  # an array of tables
                tables = [i for i in items if isinstance(i, Mapping)]
                if len(tables) != len(items):
                    raise ValueError("expected an array of tables ([[name]] in TOML)")
                return tuple(dict(t) for t in tables)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if origin is dict or kind is dict:
            if not isinstance(raw, Mapping):
                raise ValueError("expected a table")
            return dict(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(
            f"setting {name!r} from {source}: {raw!r} is not valid ({exc})"
        ) from None
    return raw


_IMMUTABLE = re.compile(r"Cannot mutate immutable namespace \(([^)]*)\)")


def _toml_problem(exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's message, with its cryptic ones said in the user's terms."""
    text = str(exc)
    found = _IMMUTABLE.search(text)
    if found:
        key = ".".join(part.strip(" '\"") for part in found[1].split(",") if part.strip())
        where = text[found.end():].strip(" ()")
        return (f"{key!r} is set twice: a `{key} = ...` line and a [[{key}]] or [{key}] "
                f"table cannot both be in one file; delete the `{key} = ...` line and keep "
                f"the tables ({where})")
    return text


def load_settings(
    cls: type[T],
    *,
    file: str | os.PathLike[str] | None = None,
    env_prefix: str = "",
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults < file < environment < flags (None flags are unset)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}

    def take(key: str, raw: Any, source: str) -> None:
        name = key.replace("-", "_")
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise SettingsError(f"unknown setting {key!r} in {source}; known settings: {known}")
        values[name] = _convert(name, raw, hints[name], source)

    if file is not None:
        path = Path(file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: "
                                f"{_toml_problem(exc)}") from None
        for key, raw in data.items():
            take(key, raw, f"config file {path}")
    env = os.environ if environ is None else environ
    if env_prefix:
        for var in sorted(v for v in env if v.startswith(env_prefix)):  # a typo is refused
            take(var[len(env_prefix):].lower(), env[var], f"environment variable {var}")
    for key, raw in (flags or {}).items():
        if raw is not None:
            take(key, raw, f"flag --{key.replace('_', '-')}")
    return cls(**values)
