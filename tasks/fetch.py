"""The task the flows map over an image's tree: fetch one descriptor, return its selected children."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from ocimirror.config import RegistrySettings, StoreSettings
from ocimirror.descriptor import Descriptor
from ocimirror.pull import pull_handler
from ocimirror.remotes.reference import parse_reference
from ocimirror.report import describe
from ocimirror.selection import PlatformSelection

from .clients import registry_client, target_store
from .policy import RETRY_POLICY


def _run_name() -> str:
    """``layer sha256:1a2b3c4d 30.0 MB``: what a person needs to recognise a task run in the UI."""
    descriptor = task_run.parameters["descriptor"]
    return describe(descriptor if isinstance(descriptor, Descriptor) else Descriptor.model_validate(descriptor))


@task(name="fetch-descriptor", task_run_name=_run_name, cache_policy=NO_CACHE, persist_result=False, **RETRY_POLICY)
def fetch_descriptor(
    descriptor: Descriptor,
    reference: str,
    store: StoreSettings,
    registries: dict[str, RegistrySettings],
    selection: PlatformSelection,
    concurrency: int,
) -> list[Descriptor]:
    """Copy ``descriptor``'s content from the registry of ``reference`` into ``store`` (verified, resumed
    if interrupted) and return the children ``selection`` keeps, for the flow's next level."""
    registry = registry_client(registries, concurrency)
    fetcher = registry.fetcher(parse_reference(reference))
    return list(pull_handler(fetcher, target_store(store), selection)(descriptor))
