"""Where credentials for a registry host come from: explicit config, the environment, Docker's config.json.

The first source that knows the host wins, in this order:

1. ``RegistryConfig.credentials``;
2. environment variables named after the host, so CI systems can inject secrets without files:
   ``OCIMIRROR_REGISTRY_USERNAME_<HOST>`` with ``OCIMIRROR_REGISTRY_PASSWORD_<HOST>``, or
   ``OCIMIRROR_REGISTRY_IDENTITY_TOKEN_<HOST>``, where ``<HOST>`` is the host upper-cased with every
   character that is not a letter or digit replaced by ``_`` (``docker.io`` -> ``DOCKER_IO``,
   ``127.0.0.1:5000`` -> ``127_0_0_1_5000``);
3. Docker's ``config.json`` (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``): a
   ``credHelpers`` entry for the host, then the ``credsStore``, then the ``auths`` entry (base64
   ``auth`` of ``user:password``, or ``identitytoken``), the same precedence as the Docker CLI.

Helpers are the programs ``docker-credential-<name>`` on ``PATH``, asked with ``get`` and the server URL on
stdin. Nothing read here is ever logged; errors name the source and host, never the secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError

from ..errors import ConfigError
from ..jsonlimits import decode_json
from .config import Credentials, RegistryConfig
from .reference import DOCKER_HUB, DOCKER_HUB_ALIASES

ENV_PREFIX = "OCIMIRROR_REGISTRY_"
#: The key Docker uses for Docker Hub in config.json and when asking credential helpers.
DOCKER_HUB_SERVER_URL = "https://index.docker.io/v1/"
#: A helper answering with this username returned an identity token as its secret.
IDENTITY_TOKEN_USERNAME = "<token>"
HELPER_TIMEOUT_SECONDS = 30


def lookup_credentials(
    host: str,
    config: RegistryConfig | None = None,
    environ: Mapping[str, str] | None = None,
    docker_config: Path | None = None,
) -> Credentials | None:
    """The credentials for registry ``host``, or ``None`` for anonymous access.

    ``environ`` defaults to ``os.environ``; ``docker_config`` is the config.json path, by default
    ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.
    """
    if config is not None and config.credentials is not None:
        return config.credentials
    environ = os.environ if environ is None else environ
    found = credentials_from_environment(host, environ)
    if found is not None:
        return found
    path = docker_config if docker_config is not None else default_docker_config_path(environ)
    return credentials_from_docker_config(host, path, environ)


def environment_key(host: str) -> str:
    """The ``<HOST>`` suffix of the environment variables for ``host``."""
    return re.sub(r"[^A-Za-z0-9]", "_", canonical_host(host)).upper()


def credentials_from_environment(host: str, environ: Mapping[str, str]) -> Credentials | None:
    """Credentials from ``OCIMIRROR_REGISTRY_{USERNAME,PASSWORD,IDENTITY_TOKEN}_<HOST>``."""
    key = environment_key(host)
    username = environ.get(f"{ENV_PREFIX}USERNAME_{key}")
    password = environ.get(f"{ENV_PREFIX}PASSWORD_{key}")
    token = environ.get(f"{ENV_PREFIX}IDENTITY_TOKEN_{key}")
    if token:
        return Credentials(username=username, identity_token=SecretStr(token))
    if username is not None and password is not None:
        return Credentials(username=username, password=SecretStr(password))
    if username is not None or password is not None:
        raise ConfigError(f"{ENV_PREFIX}USERNAME_{key} and {ENV_PREFIX}PASSWORD_{key} must be set together")
    return None


def default_docker_config_path(environ: Mapping[str, str]) -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    directory = environ.get("DOCKER_CONFIG")
    base = Path(directory) if directory else Path.home() / ".docker"
    return base / "config.json"


def canonical_host(host_or_url: str) -> str:
    """The registry host a config.json key or server URL stands for (Docker Hub's aliases folded)."""
    text = host_or_url.strip()
    netloc = urlsplit(text).netloc if "://" in text else text.split("/", 1)[0]
    return DOCKER_HUB if netloc.lower() in DOCKER_HUB_ALIASES else netloc


def credentials_from_docker_config(host: str, path: Path, environ: Mapping[str, str]) -> Credentials | None:
    """Credentials for ``host`` from a Docker ``config.json`` at ``path`` (absent file: ``None``)."""
    try:
        document = decode_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read Docker config {path}: {type(error).__name__}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"Docker config {path} is not a JSON object")
    host = canonical_host(host)
    server_url = DOCKER_HUB_SERVER_URL if host == DOCKER_HUB else host
    helpers = document.get("credHelpers") or {}
    helper = next((name for key, name in helpers.items() if canonical_host(key) == host), None)
    if helper:
        return credentials_from_helper(helper, server_url, environ)
    store = document.get("credsStore")
    if store:
        found = credentials_from_helper(store, server_url, environ)
        if found is not None:
            return found
    auths = document.get("auths") or {}
    entry = next((value for key, value in auths.items() if canonical_host(key) == host), None)
    if not isinstance(entry, dict):
        return None
    return _credentials_from_auth_entry(entry, host, path)


def _credentials_from_auth_entry(entry: dict[str, object], host: str, path: Path) -> Credentials | None:
    token = entry.get("identitytoken")
    username = entry.get("username")
    password = entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            username, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise ConfigError(f"Docker config {path}: the auth entry for {host} is not base64 of user:password")
    try:
        if isinstance(token, str) and token:
            return Credentials(username=username or None, identity_token=SecretStr(token))
        if isinstance(username, str) and isinstance(password, str) and username:
            return Credentials(username=username, password=SecretStr(password))
    except ValidationError:
        raise ConfigError(f"Docker config {path}: unusable credentials for {host}") from None
    return None


def credentials_from_helper(name: str, server_url: str, environ: Mapping[str, str]) -> Credentials | None:
    """Ask ``docker-credential-<name> get`` for ``server_url``; ``None`` when it has nothing stored."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"credential helper name {name[:100]!r} is not a plain program suffix")
    program = f"docker-credential-{name}"
    try:
        completed = subprocess.run(
            [program, "get"],
            input=server_url.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT_SECONDS,
            env=dict(environ),
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(f"credential helper {program} is configured but not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"credential helper {program} did not answer within {HELPER_TIMEOUT_SECONDS} s") from None
    if completed.returncode != 0:
        # The helper protocol's "not found" answer; any other failure text may echo input, so it is not shown.
        if b"credentials not found" in completed.stdout.lower() + completed.stderr.lower():
            return None
        raise ConfigError(f"credential helper {program} failed for {server_url} (exit {completed.returncode})")
    try:
        answer = decode_json(completed.stdout)
        username, secret = answer["Username"], answer["Secret"]
        if not isinstance(username, str) or not isinstance(secret, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"credential helper {program} gave an unreadable answer for {server_url}") from None
    if not secret:
        return None
    if username == IDENTITY_TOKEN_USERNAME:
        return Credentials(identity_token=SecretStr(secret))
    return Credentials(username=username, password=SecretStr(secret))
