"""One JSON log line from whatever a record carries.

orjson refuses some values outright, whatever `default` says: ints outside 64 bits, strings
with lone surrogates, dict keys that are not strings, nesting past 254 levels. A log line is
written for every record all the same: the first refusal re-encodes the line from a copy
made of plain JSON values (`_plain`), and if even that fails a minimal line says so. A
record that cannot be written as it is must never cost the writer or the lines after it.
"""

from typing import Any

import orjson

MAX_DEPTH = 32
MAX_REPR_CHARS = 2000


def dumps(line: dict[str, Any]) -> str:
    """The line as one JSON object (no newline), in a fallback form if need be."""
    try:
        return orjson.dumps(line, default=_text).decode()
    except Exception:  # noqa: S110 - refused as it is: encoded again below from a plain copy
        pass
    try:
        return orjson.dumps(_plain(line, 0)).decode()
    except Exception as exc:
        return orjson.dumps(
            {
                "ts": _text(line.get("ts")),
                "level": "error",
                "logger": "conduit.logs",
                "msg": f"unwritable log line ({type(exc).__name__})",
            }
        ).decode()


def _plain(value: object, depth: int) -> object:
    """A copy of `value` made only of what orjson always encodes."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else _big_int(value)
    if isinstance(value, str):
        return _valid(value)
    if depth >= MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, dict):
        return {_key(key): _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item, depth + 1) for item in value]
    return _text(value)


def _big_int(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # past sys.get_int_max_str_digits; hex has no such limit
        return hex(value)


def _key(key: object) -> str:
    return _valid(key) if isinstance(key, str) else _text(key)


def _text(value: object) -> str:
    """str() of anything, never raising, valid UTF-8 and bounded."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return _valid(text[:MAX_REPR_CHARS])


def _valid(text: str) -> str:
    """Lone surrogates (from undecodable bytes, say) as `\\udcxx` escapes, visible as such."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
