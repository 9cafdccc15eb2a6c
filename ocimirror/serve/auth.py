"""HTTP Basic authentication against an htpasswd file of bcrypt entries (as distribution's ``auth.htpasswd``).

Clients send credentials with every request (skopeo and containerd do), and bcrypt is deliberately slow, so a
verified pair is remembered: under an HMAC with a key made at start-up, never as the password itself.
Checks run in a worker thread, so a burst of logins does not stall the event loop. Unknown users cost a
bcrypt check too, so timing does not tell which usernames exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError, OcimirrorError

#: The prefixes of bcrypt hashes: the only kind distribution accepts, and the only kind read here.
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
#: Verified credentials remembered at most (the cache is emptied when full).
CACHE_SIZE = 1024


class MissingDependency(OcimirrorError):
    """A package needed for an optional feature is not installed; the message says how to install it."""


def _bcrypt() -> ModuleType:
    try:
        return importlib.import_module("bcrypt")
    except ImportError:
        raise MissingDependency(
            "--htpasswd needs the bcrypt package: pip install 'ocimirror[serve]' (or pip install bcrypt)"
        ) from None


class Htpasswd:
    """Users and bcrypt hashes read from an htpasswd file; ``check`` verifies a username and password."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._bcrypt = _bcrypt()
        self._users = dict(users)
        self._key = os.urandom(32)
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()
        # A real hash to check unknown users against, so they take as long as known ones.
        self._decoy = next(iter(self._users.values()), None) or self._bcrypt.hashpw(b"-", self._bcrypt.gensalt(4))

    def __repr__(self) -> str:
        return f"Htpasswd({len(self._users)} users)"

    @classmethod
    def load(cls, path: str | Path) -> Htpasswd:
        """Read ``user:hash`` lines (blank lines and ``#`` comments allowed); a ``ConfigError`` names the line
        that is wrong, never its content."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read htpasswd file {path}: {reason}") from None
        users: dict[str, bytes] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user:
                raise ConfigError(f"htpasswd file {path}, line {number}: expected user:bcrypt-hash")
            if not hashed.startswith(BCRYPT_PREFIXES):
                raise ConfigError(
                    f"htpasswd file {path}, line {number}: only bcrypt hashes are supported (htpasswd -B)"
                )
            users[user] = hashed.encode()
        if not users:
            raise ConfigError(f"htpasswd file {path} has no users")
        return cls(users)

    def check(self, username: str, password: str) -> bool:
        """Whether ``password`` is ``username``'s (blocking: bcrypt takes tens of milliseconds)."""
        token = hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if token in self._verified:
                return True
        hashed = self._users.get(username)
        try:
            ok = self._bcrypt.checkpw(password.encode(), hashed or self._decoy) and hashed is not None
        except ValueError:  # a hash the library cannot read
            ok = False
        if ok:
            with self._lock:
                if len(self._verified) >= CACHE_SIZE:
                    self._verified.clear()
                self._verified.add(token)
        return ok


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic ...`` header, or ``None`` if there is none usable."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
