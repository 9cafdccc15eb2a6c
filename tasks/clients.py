"""The core objects tasks work with, built inside the worker process and reused across tasks.

Task parameters are plain, serialisable settings (no sessions, no filesystems, no secrets), so they show
in the UI and hash cleanly; the live objects (registry sessions with pooled connections, fsspec stores)
are built here once per process and settings. Secrets are read here, never passed as parameters.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache

from prefect.blocks.system import Secret

from ocimirror.config import RegistrySettings, SecretRef, StoreSettings, read_env_secret, registry_configs
from ocimirror.errors import ConfigError
from ocimirror.remotes import Registry, RegistryConfig
from ocimirror.store import LayoutStore, open_store


def read_secret(ref: SecretRef) -> str:
    """A secret's value from an environment variable or a Prefect Secret block."""
    if ref.secret_block is None:
        return read_env_secret(ref)
    try:
        value = Secret.load(ref.secret_block).get()
    except ValueError as error:
        raise ConfigError(f"Prefect Secret block {ref.secret_block!r} cannot be loaded: {error}") from None
    return str(value)


#: Tasks start in parallel threads: one lock so the first calls build one shared object, not one each.
_building = threading.Lock()


@lru_cache(maxsize=32)
def _registry(registries_json: str, max_connections: int) -> Registry:
    registries = {
        host: RegistrySettings.model_validate(settings) for host, settings in json.loads(registries_json).items()
    }
    return Registry(
        registry_configs(registries, read_secret, max_connections),
        default_config=RegistryConfig(max_connections=max_connections),
    )


def registry_client(registries: dict[str, RegistrySettings], max_connections: int) -> Registry:
    """The shared registry client for these settings, with connection pools of ``max_connections``."""
    key = json.dumps({host: settings.model_dump(mode="json") for host, settings in registries.items()}, sort_keys=True)
    with _building:
        return _registry(key, max_connections)


@lru_cache(maxsize=32)
def _store(settings_json: str) -> LayoutStore:
    settings = StoreSettings.model_validate_json(settings_json)
    return open_store(settings.url, settings.storage_options(read_secret))


def target_store(settings: StoreSettings) -> LayoutStore:
    """The shared store object for these settings."""
    with _building:
        return _store(settings.model_dump_json())
