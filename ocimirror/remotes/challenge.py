"""``WWW-Authenticate`` challenges (RFC 7235): what a registry's 401 asks the client to do.

Kept apart from :mod:`.auth` because parsing a header is one concern (hostile input, quoting rules) and
answering it with tokens or credentials is another.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a lower-case scheme and its parameters (names lower-cased)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges (RFC 7235).

    Handles quoted values with commas and escaped quotes inside, and several challenges in one header
    (``Basic realm="x", Bearer realm="y",service="z"``). Malformed trailing parts are ignored: a
    challenge is a hint, and the request then fails with the server's 401 anyway.
    """
    challenges: list[Challenge] = []
    position, length = 0, len(header)
    current: Challenge | None = None
    while position < length:
        position = _skip(header, position, " \t,")
        if position >= length:
            break
        token_end = _token_end(header, position)
        if token_end == position:
            break
        token = header[position:token_end]
        after = _skip(header, token_end, " \t")
        if after < length and header[after] == "=":
            if _is_token68_tail(header, after) or current is None:
                # A token68 credential ("Negotiate abc==") or a stray parameter: nothing to learn from it.
                position = _skip(header, after, "=")
                continue
            value, position = _param_value(header, _skip(header, after + 1, " \t"))
            current.params[token.lower()] = value
            continue
        current = Challenge(scheme=token.lower())
        challenges.append(current)
        position = token_end
    return challenges


def _skip(text: str, position: int, characters: str) -> int:
    while position < len(text) and text[position] in characters:
        position += 1
    return position


def _token_end(text: str, position: int) -> int:
    while position < len(text) and text[position] not in ' \t,="':
        position += 1
    return position


def _is_token68_tail(text: str, position: int) -> bool:
    # "Negotiate abc==" : '=' padding ending a token68 rather than introducing a value.
    rest = _skip(text, position, "=")
    return rest >= len(text) or text[rest] in " \t,"


def _param_value(text: str, position: int) -> tuple[str, int]:
    if position < len(text) and text[position] == '"':
        chars: list[str] = []
        position += 1
        while position < len(text) and text[position] != '"':
            if text[position] == "\\" and position + 1 < len(text):
                position += 1
            chars.append(text[position])
            position += 1
        return "".join(chars), position + 1
    end = _token_end(text, position)
    return text[position:end], end
