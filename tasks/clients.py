"""What tasks need to reach registries and the store, as plain settings, and the live clients built from
them once per worker process.

Task parameters are plain, serialisable settings (no sessions, no filesystems, no secrets), so they show
in the UI and hash cleanly; the live objects (registry sessions with pooled connections, fsspec stores)
are built here once per process and settings. Secrets are read here, never passed as parameters.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from prefect.blocks.system import Secret
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ocimirror.config import RegistrySettings, SecretRef, StoreSettings, read_env_secret
from ocimirror.errors import ConfigError
from ocimirror.remotes import Registry
from ocimirror.store import LayoutStore
from ocimirror.sync import open_registry, open_target

from .budget import BUDGET


def read_secret(ref: SecretRef) -> str:
    """A secret's value from an environment variable or a Prefect Secret block."""
    if ref.secret_block is None:
        return read_env_secret(ref)
    try:
        value = Secret.load(ref.secret_block).get()
    except ValueError as error:
        raise ConfigError(f"Prefect Secret block {ref.secret_block!r} cannot be loaded: {error}") from None
    return str(value)


class Target(BaseModel):
    """Into which store, and how to reach the registries: everything a task needs besides its work."""

    model_config = ConfigDict(frozen=True)

    store: StoreSettings
    registries: dict[str, RegistrySettings] = Field(default_factory=dict)
    concurrency: int = 8

    def registry(self) -> Registry:
        """The shared registry client for these settings, with connection pools of ``concurrency``; registries
        with a request budget draw from the fleet's (``tasks.budget``)."""
        with _building:
            return _registry(_REGISTRIES.dump_json(self.registries).decode(), self.concurrency)

    def open_store(self) -> LayoutStore:
        """The shared store object for these settings."""
        with _building:
            key = self.store.model_dump_json()
            return _registered.get(key) or _store(key)


#: Tasks start in parallel threads: one lock so the first calls build one shared object, not one each.
_building = threading.Lock()


_REGISTRIES = TypeAdapter(dict[str, RegistrySettings])


@lru_cache(maxsize=32)
def _registry(registries_json: str, concurrency: int) -> Registry:
    return open_registry(_REGISTRIES.validate_json(registries_json), concurrency, read_secret, BUDGET)


@lru_cache(maxsize=32)
def _store(settings_json: str) -> LayoutStore:
    return open_target(StoreSettings.model_validate_json(settings_json), read_secret)


def register_store(settings: StoreSettings, store: LayoutStore) -> None:
    """Use ``store`` for ``settings`` in this process: a caller that opened the store itself (the command
    line, with secret options from its arguments) runs flows without handing those secrets to anyone."""
    with _building:
        _registered[settings.model_dump_json()] = store


_registered: dict[str, LayoutStore] = {}
