"""Decoding JSON that came from outside (a registry, a shared store) without letting its shape hurt us.

Python's ``json`` module and pydantic both recurse once per nesting level, so a 200 KB document of 100,000
nested brackets raises ``RecursionError`` (or worse, deeper in C) instead of a decoding error. The nesting
depth is therefore measured first, without recursion and in linear time, and a document nested deeper
than ``MAX_JSON_DEPTH`` is refused before it is decoded.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import NestingTooDeep

#: The deepest nesting accepted. Real documents stay far below it: an OCI index nests 5 levels
#: (index → manifests → descriptor → platform → os.features), a manifest 4, an image config 4
#: (config → Healthcheck → Test), index.json 4, Docker's config.json 3. 32 leaves room for extensions
#: while keeping decoding ~30x below Python's recursion limit.
MAX_JSON_DEPTH = 32

#: A JSON string, escapes included (unrolled so long strings cost one scan).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: Every byte that is not a bracket, deleted so only the nesting structure is left.
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_OBJECTS_AS_ARRAYS = bytes.maketrans(b"{}", b"[]")


def nested_deeper_than(content: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays and objects of ``content`` nest deeper than ``limit`` levels.

    Strings are cut out, every other byte but the brackets dropped, and innermost ``[]`` pairs removed
    once per level: at most ``limit`` passes of C-speed ``bytes.replace``, no recursion. Malformed
    bracketing stops the count early and is left for the JSON decoder to report.
    """
    structure = _STRING.sub(b"", content).translate(_OBJECTS_AS_ARRAYS, _NOT_BRACKETS)
    for _ in range(limit):
        reduced = structure.replace(b"[]", b"")
        if len(reduced) == len(structure):
            return False
        structure = reduced
    return b"[]" in structure


def decode_json(content: bytes | str, limit: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for untrusted input: ``NestingTooDeep`` (a ``ValueError``, like every decoding
    error) for documents nested deeper than ``limit``, instead of a ``RecursionError``."""
    raw = content.encode() if isinstance(content, str) else content
    if nested_deeper_than(raw, limit):
        raise NestingTooDeep(f"JSON nested deeper than {limit} levels")
    return json.loads(raw)
