"""Argument checks for the logging calls: refuse bad input at the call.

Every check raises ``TypeError`` (wrong kind) or ``ValueError`` (right kind,
wrong content) naming the argument and the rule, so a mistake surfaces on
the line that made it rather than hours later in the collector
(design.md, invariant 4). The limits are documented in ``LIMITS``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from mltrail.pipeline.values import row_size, table_size, values_size

MAX_NAME_CHARS = 255
MAX_STRING_BYTES = 64 * 1024
MAX_DESCRIPTION_CHARS = 4096
MAX_LIST_ITEMS = 250_000
MAX_TABLE_CELLS = 250_000
MAX_ROW_COLUMNS = 1_000
MAX_TAG_VALUE_CHARS = 4096
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_CALL_BYTES = 16 * 1024 * 1024  # one call's encoded size: far below gRPC's 64 MiB message
UPLOAD_CHUNK_BYTES = 1024 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

LIMITS = {
    "name": f"1..{MAX_NAME_CHARS} characters, not only whitespace, no control characters",
    "any string": "valid Unicode: no lone surrogates (UTF-8 cannot encode them)",
    "string value": f"at most {MAX_STRING_BYTES} bytes as UTF-8",
    "description": f"at most {MAX_DESCRIPTION_CHARS} characters",
    "log_list": f"at most {MAX_LIST_ITEMS} items",
    "log_table": f"at most {MAX_TABLE_CELLS} cells",
    "log_row": f"1..{MAX_ROW_COLUMNS} columns",
    "one call": "at most 16 MiB encoded: strings as UTF-8 plus 16 bytes per value, cell, "
                "column or tag (log_list, log_row, log_table, tags, properties)",
    "tag/property value": f"at most {MAX_TAG_VALUE_CHARS} characters",
    "JSON metric": f"at most {MAX_JSON_BYTES} bytes, no NaN or Infinity",
    "upload": f"sent in chunks of {UPLOAD_CHUNK_BYTES} bytes",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCALAR_TYPES = (bool, int, float, str)
JSON_SCHEMA_TYPES = ("confusion_matrix", "accuracy_table", "residuals", "predictions")

# Names already checked: a training loop logs the same few names millions of
# times, and a lookup keeps `run.log` within its few-microsecond budget. Each
# maps to the object first checked, which `run.log` queues in its place: its
# records share that one string, so the memory bound counts none per record.
_valid_names: dict[str, str] = {}


def check_name(name: Any, what: str = "name") -> str:
    if name in _valid_names:
        return str(name)
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"{what} must be at most {MAX_NAME_CHARS} characters, got {len(name)}")
    if not name.strip():
        raise ValueError(f"{what} {name!r} must not be only whitespace")
    if _CONTROL.search(name):
        raise ValueError(f"{what} {name!r} must not contain control characters")
    if not name.isascii():
        utf8_size(name, what)
    if len(_valid_names) < 100_000:
        _valid_names[name] = name
    return name


def check_value(value: Any, what: str = "value") -> bool | int | float | str:
    """A value of the Azure v1 kinds; numpy scalars come back as Python ones."""
    kind = type(value)
    if kind is float or kind is bool:
        return value
    if kind is int:
        return _check_int(value, what)
    if kind is str:
        return _check_str(value, what)
    if isinstance(value, _SCALAR_TYPES):
        return check_value(_convert_subclass(value), what)  # e.g. numpy.float64, IntEnum
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return check_value(item(), what)  # numpy scalar or 0-d array
    raise TypeError(
        f"{what} must be a bool, int, float or str (or a numpy scalar), got {kind.__name__}"
    )


def _convert_subclass(value: Any) -> bool | int | float | str:
    for base in _SCALAR_TYPES:
        if isinstance(value, base):
            return base(value)
    raise TypeError(f"unsupported value {value!r}")


def _check_int(value: int, what: str) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what} {value} does not fit in a signed 64-bit integer")
    return value


def _check_str(value: str, what: str) -> str:
    size = len(value) if value.isascii() else utf8_size(value, what)
    if size > MAX_STRING_BYTES:
        raise ValueError(f"{what} must be at most {MAX_STRING_BYTES} bytes as UTF-8")
    return value


def utf8_size(text: str, what: str) -> int:
    """Bytes of ``text`` as UTF-8; a lone surrogate is refused here, at the call.

    ``os.fsdecode`` of a file name that is not UTF-8 makes one; protobuf cannot
    encode it, and the sender thread would otherwise fail on it much later.
    """
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} must be valid Unicode: it has a lone surrogate {text[exc.start]!r} at "
            f"index {exc.start}, which UTF-8 cannot encode (from os.fsdecode? decode the "
            "bytes with errors='replace')") from None


def check_description(description: Any) -> str:
    if description is None:
        return ""
    if not isinstance(description, str):
        raise TypeError(f"description must be a str, got {type(description).__name__}")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"description must be at most {MAX_DESCRIPTION_CHARS} characters")
    if not description.isascii():
        utf8_size(description, "description")
    return description


def check_step(step: Any) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, int):
        item = getattr(step, "item", None)
        if callable(item) and isinstance(item(), int) and not isinstance(item(), bool):
            return check_step(item())
        raise TypeError(f"step must be an int or None, got {type(step).__name__}")
    if not 0 <= step <= INT64_MAX:
        raise ValueError(f"step must be between 0 and {INT64_MAX}, got {step}")
    return step


def check_list(values: Any, what: str = "value") -> list[bool | int | float | str]:
    if isinstance(values, str | bytes | Mapping) or not hasattr(values, "__iter__"):
        raise TypeError(f"{what} must be a list of values, got {type(values).__name__}")
    items = values.tolist() if hasattr(values, "tolist") else list(values)
    if len(items) > MAX_LIST_ITEMS:
        raise ValueError(f"{what} must have at most {MAX_LIST_ITEMS} items, got {len(items)}")
    checked = [check_value(v, f"{what}[{i}]") for i, v in enumerate(items)]
    check_call_size(values_size(checked), what)
    return checked


def check_call_size(size: int, what: str) -> None:
    """One call must fit one message with room to spare, however its items are sized."""
    if size > MAX_CALL_BYTES:
        raise ValueError(
            f"{what} must be at most 16 MiB per call ({MAX_CALL_BYTES} bytes: strings as "
            f"UTF-8 plus 16 bytes per value), got about {size}; split it over several calls")


def check_table(table: Any) -> dict[str, list[bool | int | float | str]]:
    if not isinstance(table, Mapping):
        raise TypeError(f"value must be a dict of column name -> list, got {type(table).__name__}")
    if not table:
        raise ValueError("value must have at least one column")
    columns = {check_name(k, "column name"): check_list(v, f"value[{k!r}]")
               for k, v in table.items()}
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k!r}: {n}" for k, n in lengths.items())
        raise ValueError(f"value's columns must all have the same length, got {shown}; "
                         "fill the short columns or log them as separate tables")
    cells = sum(len(v) for v in columns.values())
    if cells > MAX_TABLE_CELLS:
        raise ValueError(f"value must have at most {MAX_TABLE_CELLS} cells, got {cells}")
    check_call_size(table_size(columns), "value")
    return columns


def check_row(columns: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    if not columns:
        raise ValueError("log_row needs at least one column as a keyword argument, e.g. x=1")
    if len(columns) > MAX_ROW_COLUMNS:
        raise ValueError(f"log_row takes at most {MAX_ROW_COLUMNS} columns, got {len(columns)}")
    cells = {check_name(k, "column name"): check_value(v, f"column {k!r}")
             for k, v in columns.items()}
    check_call_size(row_size(cells), "log_row")
    return cells


def check_tags(tags: Any, what: str = "tags") -> dict[str, str]:
    """Tag or property values become strings, as in Azure v1."""
    if not isinstance(tags, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(tags).__name__}")
    checked = {check_name(k, f"{what} key"): tag_value(v, f"{what}[{k!r}]")
               for k, v in tags.items()}
    check_call_size(row_size(checked), what)
    return checked


def tag_value(value: Any, what: str = "value") -> str:
    if value is None:
        return ""
    text = str(check_value(value, what))
    if len(text) > MAX_TAG_VALUE_CHARS:
        raise ValueError(f"{what} must be at most {MAX_TAG_VALUE_CHARS} characters")
    return text


def check_json_metric(value: Any, schema_type: str) -> tuple[str, str]:
    """The v1 JSON-schema dict (or its JSON text); returns (schema_version, json)."""
    doc = _parse_json(value)
    missing = [k for k in ("schema_type", "schema_version", "data") if k not in doc]
    if missing:
        raise ValueError(
            f"value must have the keys schema_type, schema_version and data; missing {missing}"
        )
    if doc["schema_type"] != schema_type:
        raise ValueError(
            f"value['schema_type'] must be {schema_type!r}, got {doc['schema_type']!r}"
        )
    try:
        text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise ValueError("value must not contain NaN or Infinity (JSON has neither)") from None
    except TypeError as exc:
        raise TypeError(f"value must be JSON-serializable: {exc}") from None
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"value must be at most {MAX_JSON_BYTES} bytes as JSON")
    version = _check_str(str(doc["schema_version"]), "value['schema_version']")
    return version, text


def _parse_json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise ValueError(f"value is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise TypeError(f"value must be a dict or a JSON string, got {type(value).__name__}")
    return dict(value)


def _refuse_constant(name: str) -> float:
    raise ValueError("value must not contain NaN or Infinity (JSON has neither)")


def check_artifact_name(name: Any, what: str = "name") -> str:
    """A relative path inside the run: no '..', no leading '/'."""
    check_name(name, what)
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"{what} {name!r} must be a relative path without '.', '..' or empty parts"
        )
    return "/".join(parts)
