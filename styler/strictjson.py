"""JSON from files styler did not write itself (model metadata, checkpoint
headers, run folders), parsed so that no document can crash or exhaust the
reader: numbers are finite and of sane size, nesting is bounded, and every
failure is one ``ValueError`` with a short reason."""

from __future__ import annotations

import json
import math
from typing import Any

#: Longest integer literal accepted (int64 has 19 digits): Python would
#: otherwise parse a 4,000-digit literal, and refuse a longer one with an
#: unrelated error.
MAX_INT_DIGITS = 20
#: Deepest nesting of arrays and objects accepted.
MAX_DEPTH = 64


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > 64:
        raise ValueError(f"a number of {len(text)} characters")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"a number out of range ({text[:20]})")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name}, which JSON does not allow")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are each given once (Python keeps the last of a
    repeated key, another reader the first: which one counts is unclear)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key[:40]!r} is given twice")
        out[key] = value
    return out


def _depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def loads(text: str | bytes) -> Any:
    """``text`` parsed as JSON, or ``ValueError`` whose message says why not
    in a few words (not UTF-8, the decoder's complaint, NaN or Infinity, a
    huge number, nested too deep)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
    if ("[" in text or "{" in text) and _depth(text) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} deep")
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique,
        )
    except json.JSONDecodeError as exc:
        raise ValueError(exc.msg) from None
    except RecursionError:
        raise ValueError("nested too deep") from None
