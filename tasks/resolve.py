"""Tasks that ask a registry what a reference points to and which tags exist."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ocimirror.config import RegistrySettings
from ocimirror.descriptor import Descriptor
from ocimirror.remotes.reference import parse_reference

from .clients import registry_client
from .policy import RETRY_POLICY


@task(name="resolve", task_run_name="resolve {reference}", cache_policy=NO_CACHE, persist_result=False, **RETRY_POLICY)
def resolve_reference(reference: str, registries: dict[str, RegistrySettings], concurrency: int) -> Descriptor:
    """The root descriptor (index or manifest) ``reference`` names at its registry."""
    return registry_client(registries, concurrency).resolve(parse_reference(reference))


@task(
    name="list-tags",
    task_run_name="list tags of {repository}",
    cache_policy=NO_CACHE,
    persist_result=False,
    **RETRY_POLICY,
)
def list_tags(repository: str, registries: dict[str, RegistrySettings], concurrency: int) -> list[str]:
    """Every tag of ``repository`` (all pages)."""
    return registry_client(registries, concurrency).tags(parse_reference(repository))
