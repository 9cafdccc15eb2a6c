"""Prefect tasks over the store lifecycle core (verify, repair, gc), and the per-store concurrency slot that
keeps maintenance and syncs of one store from overlapping."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from ocimirror.config import RegistrySettings, StoreSettings
from ocimirror.gc import GcReport, collect_garbage, parse_duration
from ocimirror.repair import REPAIR_CONNECTIONS, RepairReport, repair_store
from ocimirror.store.layout import redact_url
from ocimirror.verify import VerifyReport, verify_store

from .clients import Target


def store_limit_name(store: StoreSettings) -> str:
    """The Prefect global concurrency limit of a store: ``ocimirror-store-<readable part>-<hash>``, the same
    for every run naming the same URL (trailing slashes ignored), safe as a limit name."""
    url = store.url.rstrip("/")
    readable = re.sub(r"[^a-z0-9]+", "-", redact_url(url).lower()).strip("-")[-40:]
    return f"ocimirror-store-{readable}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


@contextmanager
def store_slot(store: StoreSettings, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold the store's one slot (a Prefect global concurrency limit of 1, created on first use) for the
    block: a sync or maintenance run of the same store waits until it is released, on any worker.
    ``TimeoutError`` after ``timeout_seconds`` (``None``: wait as long as it takes)."""
    name = store_limit_name(store)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit=1)
    with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True):
        yield


@task(name="verify-store", cache_policy=NO_CACHE, persist_result=False)
def verify_store_task(store: StoreSettings) -> VerifyReport:
    """Re-hash every blob and walk every image of the store."""
    return verify_store(Target(store=store).open_store())


@task(name="repair-store", cache_policy=NO_CACHE, persist_result=False)
def repair_store_task(
    store: StoreSettings, registries: dict[str, RegistrySettings], report: VerifyReport
) -> RepairReport:
    """Fetch what ``report`` found damaged or missing again from the images' registries."""
    target = Target(store=store, registries=registries, concurrency=REPAIR_CONNECTIONS)
    return repair_store(target.open_store(), target.registry(), report)


@task(name="collect-garbage", cache_policy=NO_CACHE, persist_result=False)
def collect_garbage_task(store: StoreSettings, grace: str, dry_run: bool) -> GcReport:
    """Delete (or with ``dry_run`` list) the blobs no image reaches, committed more than ``grace`` ago."""
    return collect_garbage(Target(store=store).open_store(), parse_duration(grace), dry_run=dry_run)
