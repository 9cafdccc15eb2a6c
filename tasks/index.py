"""The task that records a fetched image in the store's index.json: the last step, after every blob."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from ocimirror.config import StoreSettings
from ocimirror.descriptor import Descriptor
from ocimirror.pull import tag_image
from ocimirror.selection import PlatformSelection

from .clients import target_store
from .policy import RETRY_POLICY


@task(name="tag-image", task_run_name="tag {reference}", cache_policy=NO_CACHE, persist_result=False, **RETRY_POLICY)
def tag_in_store(reference: str, root: Descriptor, store: StoreSettings, selection: PlatformSelection) -> Descriptor:
    """Point ``reference`` at ``root`` (or at its platform-filtered index) in the store's index.json."""
    return tag_image(target_store(store), reference, root, selection)
