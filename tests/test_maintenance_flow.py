"""The ``store_maintenance`` flow on the Prefect test harness: verify, repair, gc, artifact, store slot."""

from __future__ import annotations

import threading

import pytest

from flows.maintenance import ARTIFACT_KEY, store_maintenance
from ocimirror.config import StoreSettings
from tasks.maintenance import store_limit_name, store_slot
from tests.test_lifecycle_cli import damage, mirror
from tests.test_store import make_image, store_location, tree


def _artifact_rows(key: str) -> list[dict[str, str]]:
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1)
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data  # type: ignore[return-value]


def test_maintenance_repairs_collects_and_reports(prefect_server, seeded_registry, request) -> None:
    location = store_location("file", request)
    store = location.open()
    (name,) = mirror(store, seeded_registry.reference("test/single:v1"))
    layer = tree(store, store.resolve(name))[0]
    damage(store, layer.digest)
    garbage = {d.digest for d in tree(store, make_image(store, "kept"))}  # committed, never tagged

    result = store_maintenance(store=location.url, grace="0s", repair=True)

    assert not result.verify.ok and result.repair.ok
    assert [fault.digest for fault in result.repair.repaired] == [layer.digest]
    assert result.gc.blobs_deleted == len(garbage) and not garbage & set(store.blobs())
    rows = _artifact_rows(ARTIFACT_KEY)
    assert [row["step"] for row in rows] == ["verify", "repair", "gc"]
    assert f"freed {len(garbage)} blobs" in rows[2]["details"]


def test_maintenance_waits_for_the_stores_slot(prefect_server, request) -> None:
    location = store_location("file", request)
    store = location.open()
    garbage = {d.digest for d in tree(store, make_image(store, "kept"))}
    settings = StoreSettings(url=location.url)
    held, release = threading.Event(), threading.Event()

    def hold_slot() -> None:
        with store_slot(settings):  # what a sync of the same store holds
            held.set()
            release.wait(120)

    holder = threading.Thread(target=hold_slot)
    holder.start()
    try:
        assert held.wait(120)
        with pytest.raises(TimeoutError):
            store_maintenance(store=location.url, grace="0s", slot_timeout_seconds=1)
        assert garbage <= set(store.blobs()), "nothing is deleted while the slot is held elsewhere"
    finally:
        release.set()
        holder.join(120)
    result = store_maintenance(store=location.url, grace="0s")
    assert result.gc.blobs_deleted == len(garbage)


def test_store_limit_names_are_stable_and_safe() -> None:
    first = store_limit_name(StoreSettings(url="s3://bucket/prefix/"))
    assert first == store_limit_name(StoreSettings(url="s3://bucket/prefix"))
    assert first.startswith("ocimirror-store-s3-bucket-prefix-")
    assert first != store_limit_name(StoreSettings(url="s3://bucket/other"))
