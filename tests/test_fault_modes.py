"""Every fault mode of a bad network or registry, on both ways of running a sync: in this process and as a
Prefect flow run. Each run mirrors two images (an index with attestations, and a plain image) through the
fault proxy and must end with every image tagged and the store verified."""

from __future__ import annotations

from typing import Any

import pytest

from ocimirror.config import parse_config
from ocimirror.report import SyncFailed, SyncResult
from ocimirror.store import open_store
from ocimirror.verify import verify_store
from tests.fixtures.faultproxy import Fault

MODES: dict[str, dict[str, Any]] = {
    "reset": {"kind": "cut"},  # half the body, then the connection closes
    "truncate": {"kind": "cut", "path_contains": "/manifests/"},
    "corrupt": {"kind": "corrupt"},
    "429": {"kind": "status", "status": 429, "headers": {"Retry-After": "0"}},
    "503": {"kind": "status", "status": 503},
    "stall": {"kind": "stall", "delay": 0.5},
    "chaos": {"kind": "chaos", "seed": 20261129, "chance": 0.5},
}


def _sync(path: str, config: dict[str, Any]) -> SyncResult:
    if path == "in-process":
        from ocimirror.sync import sync

        return sync(parse_config(config))
    from flows.mirror import mirror_sync

    try:
        return mirror_sync(config=config)
    except SyncFailed as failed:
        return failed.result


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("path", ["in-process", "prefect"])
def test_every_fault_mode_ends_with_a_verified_store(
    path, mode, request, fault_proxy, tmp_path, record_property
) -> None:
    if path == "prefect":
        request.getfixturevalue("prefect_server")
    settings = {"path_contains": "/blobs/", "times": None, "first_per_path": True} | MODES[mode]
    fault = fault_proxy.add(Fault(**settings))  # the first response of every blob (or manifest) misbehaves
    store = tmp_path / "store"
    config = {
        "store": {"url": str(store)},
        "images": [{"source": f"{fault_proxy.host}/test/{name}", "tags": ["v1"]} for name in ("multiarch", "single")],
        "concurrency": 4,
    }

    result = _sync(path, config)

    injected = len(fault.injected) if mode == "chaos" else fault.hits
    record_property("faults_injected", injected)  # in the JUnit report: faults injected vs runs survived
    assert injected > 0, "the fault never fired"
    assert [image.status for image in result.images] == ["fetched", "fetched"], result.summary()
    report = verify_store(open_store(str(store)))
    assert report.ok and report.images_checked == 2
