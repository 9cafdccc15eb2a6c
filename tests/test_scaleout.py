"""Scale-out on a Prefect work pool, with real parts only: ``prefect server start``, the process pool and the
``fetch-image`` deployment of ``deployments/prefect.yaml``, two ``prefect worker start`` processes, the moto
S3 server, the Debian registry behind a counting, throttling proxy (``FaultProxy``).

A fan-out sync spreads its images over both workers into one S3 store, commits each blob once, keeps the
registry's budget across workers, survives a flow-run process killed mid-image, and a cancelled deployment
run stops its transfers and leaves an ingest the next run resumes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from ocimirror.config import StoreSettings
from ocimirror.descriptor import Descriptor
from ocimirror.digest import digest_bytes
from ocimirror.errors import AlreadyExists, ConfigError
from ocimirror.report import FetchResult, SyncFailed, SyncResult
from ocimirror.store import LayoutStore, open_store
from ocimirror.verify import verify_store
from ocimirror_demo.fleet import PrefectFleet, running_fleet
from ocimirror_demo.images import Image, build_manifest, push_image, random_layer
from ocimirror_demo.registry import LocalRegistry
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.objectstores import S3_REGION, ObjectStoreServer

KIB = 1024
MIB = 1024 * KIB
#: A bucket of its own with versioning on: every completed write of a key is a version, so "committed once"
#: is a fact the S3 server records.
VERSIONED_BUCKET = "ocimirror-fleet"
APPS = 6
#: Longest a test waits for a sync or a run; far beyond what they take (tens of seconds), so only a hang fails.
WAIT_SECONDS = 300.0

# ------------------------------------------------------------------------------------------------ fixtures


def _apps() -> dict[str, Image]:
    """Six images over one shared base layer and a shared middle layer, each with a layer of its own."""
    base = random_layer(2 * MIB, "fleet-base")
    middle = random_layer(256 * KIB, "fleet-middle")
    return {
        f"fleet/app{n}:v1": build_manifest([base, middle, random_layer(128 * KIB, f"fleet-app-{n}")])
        for n in range(APPS)
    }


SLOW_BIG = random_layer(4 * MIB, "fleet-slow-big")
SLOW_SMALL = random_layer(64 * KIB, "fleet-slow-small")
HUGE = random_layer(8 * MIB, "fleet-huge")


@pytest.fixture(scope="module")
def fleet_registry(registry: LocalRegistry) -> LocalRegistry:
    session = requests.Session()
    images = _apps() | {
        "fleet/slow:v1": build_manifest([SLOW_SMALL, SLOW_BIG]),
        "fleet/huge:v1": build_manifest([HUGE]),
    }
    for name, image in images.items():
        repository, _, tag = name.partition(":")
        push_image(registry.url, repository, tag, image, session=session)
    return registry


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectFleet]:
    """The server, the pool with ``fetch-image`` deployed, and two workers of two runs each."""
    with running_fleet(tmp_path_factory.mktemp("fleet")) as started:
        started.start_worker("worker-a", limit=2)
        started.start_worker("worker-b", limit=2)
        yield started


@pytest.fixture
def proxy(fleet_registry: LocalRegistry, make_fault_proxy: Callable[..., FaultProxy]) -> FaultProxy:
    return make_fault_proxy(fleet_registry.url)


@pytest.fixture(scope="module")
def versioned_bucket(s3_server: ObjectStoreServer) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name=S3_REGION,
    )
    client.create_bucket(Bucket=VERSIONED_BUCKET)
    client.put_bucket_versioning(Bucket=VERSIONED_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


@pytest.fixture
def s3_store(s3_server: ObjectStoreServer, versioned_bucket: Any) -> StoreSettings:
    return StoreSettings(url=f"s3://{VERSIONED_BUCKET}/{uuid.uuid4().hex}", options=s3_server.storage_options)


def _config(store: StoreSettings, proxy: FaultProxy, names: list[str], **registry: Any) -> dict[str, Any]:
    return {
        "store": store.model_dump(mode="json"),
        "images": [{"source": f"{proxy.host}/{name.split(':')[0]}", "tags": ["v1"]} for name in names],
        "registries": {proxy.host: registry} if registry else {},
        "concurrency": 4,
        "fan_out": True,
    }


def _sync(fleet: PrefectFleet, config: dict[str, Any]) -> SyncResult:
    from flows.mirror import mirror_sync

    with fleet.settings():
        try:
            result = mirror_sync(config=config)
        except SyncFailed as failed:
            return failed.result
    assert isinstance(result, SyncResult)
    return result


def _runs_of(fleet: PrefectFleet, store: StoreSettings) -> list[Any]:
    """Every ``fetch-image`` flow run the server has for ``store``."""
    from prefect import get_client

    with fleet.settings(), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    return [run for run in runs if (run.parameters.get("store") or {}).get("url") == store.url]


def _open(store: StoreSettings) -> LayoutStore:
    return open_store(store.url, store.options)


def _versions(bucket: Any, store: StoreSettings, folder: str) -> Counter[str]:
    prefix = store.url.removeprefix(f"s3://{VERSIONED_BUCKET}/") + f"/{folder}/"
    pages = bucket.get_paginator("list_object_versions").paginate(Bucket=VERSIONED_BUCKET, Prefix=prefix)
    return Counter(version["Key"] for page in pages for version in page.get("Versions", []))


def _wait_for(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT_SECONDS} s for {what}"
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------- fan-out


def test_fan_out_spreads_images_over_workers_into_one_store_within_the_budget(
    fleet: PrefectFleet, proxy: FaultProxy, s3_store: StoreSettings, versioned_bucket: Any
) -> None:
    names = sorted(_apps())
    # A slow link: every blob is in flight for a while, so the workers' transfers would overlap freely.
    proxy.add(Fault("throttle", path_contains="/blobs/", times=None, rate=2 * MIB))
    result = _sync(fleet, _config(s3_store, proxy, names, max_parallel_fetches=2))

    assert [(o.reference, o.status) for o in result.images] == [(f"{proxy.host}/{n}", "fetched") for n in names]
    assert all(isinstance(o.result, FetchResult) for o in result.images), "each child's FetchResult is reported"
    store = _open(s3_store)
    assert sorted(image.annotations["org.opencontainers.image.ref.name"] for image in store.images()) == [
        f"{proxy.host}/{n}" for n in names
    ]
    assert verify_store(store).ok

    runs = _runs_of(fleet, s3_store)
    assert len(runs) == APPS and all(run.state.is_completed() for run in runs)
    assert {run.labels.get("prefect.worker.name") for run in runs} == {"worker-a", "worker-b"}

    blobs = _versions(versioned_bucket, s3_store, "blobs")
    assert len(blobs) == 1 + 1 + APPS * 3, "base, middle, and each app's layer, config and manifest"
    assert set(blobs.values()) == {1}, f"blobs committed more than once: {blobs}"

    assert 1 <= proxy.peak_in_flight <= 2, f"{proxy.peak_in_flight} requests at the registry at once, budget 2"


def test_a_request_rate_holds_across_workers(fleet: PrefectFleet, proxy: FaultProxy, s3_store: StoreSettings) -> None:
    """``max_requests_per_second`` is a Prefect rate limit (slots decaying at the rate) every worker draws
    from: the requests of images on both workers arrive at the registry as a token bucket lets them, at most
    ``rate`` at once and ``rate`` a second after that (one more allowed for the jitter between a slot taken
    and its request arriving). Unlimited, one image run alone sends its manifest, config and layers within
    milliseconds: an excess of about 6 (measured), against at most 3 here."""
    from prefect import get_client

    from tasks.budget import registry_limit_name

    rate = 2.0
    result = _sync(fleet, _config(s3_store, proxy, sorted(_apps())[:4], max_requests_per_second=rate))
    assert not result.failed, [image.error for image in result.failed]
    arrivals = sorted(request.at for request in proxy.recorded(server="proxy"))
    burst = int(rate)  # the limit holds `rate` slots: the first `rate` requests may go at once
    excess = max(
        (j - i + 1) - rate * (arrivals[j] - arrivals[i]) for i in range(len(arrivals)) for j in range(i, len(arrivals))
    )
    assert len(arrivals) > 3 * burst
    assert excess <= burst + 1, f"{excess:.1f} requests beyond {rate}/s in some interval"
    with fleet.settings(), get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(registry_limit_name(proxy.host, "requests"))
    assert limit.slot_decay_per_second == rate and limit.limit == burst
    assert {run.labels.get("prefect.worker.name") for run in _runs_of(fleet, s3_store)} == {"worker-a", "worker-b"}


def test_a_killed_flow_run_costs_one_rerun_and_the_sync_completes(
    fleet: PrefectFleet, proxy: FaultProxy, s3_store: StoreSettings
) -> None:
    big = digest_bytes(SLOW_BIG)
    small = digest_bytes(SLOW_SMALL)
    proxy.add(Fault("throttle", path_contains=big, times=None, rate=512 * KIB))
    names = [*sorted(_apps())[:3], "fleet/slow:v1"]
    outcome: list[SyncResult] = []
    syncing = threading.Thread(target=lambda: outcome.append(_sync(fleet, _config(s3_store, proxy, names))))
    syncing.start()

    store = _open(s3_store)
    small_descriptor = Descriptor(
        media_type="application/vnd.oci.image.layer.v1.tar+gzip", digest=small, size=len(SLOW_SMALL)
    )

    def slow_run_mid_image() -> Any:
        """The slow image's run, once its small layer is committed and its big layer is on the wire."""
        for run in _runs_of(fleet, s3_store):
            running = "fleet/slow" in run.parameters["reference"] and run.infrastructure_pid and run.state.is_running()
            if running and proxy.recorded(path_contains=big) and store.exists(small_descriptor):
                return run
        return None

    _wait_for("the slow image's run to be mid-image", lambda: slow_run_mid_image() is not None)
    victim = slow_run_mid_image()
    os.kill(int(victim.infrastructure_pid), signal.SIGKILL)
    syncing.join(WAIT_SECONDS)
    assert not syncing.is_alive()

    (result,) = outcome
    assert not result.failed and {o.status for o in result.images} == {"fetched"}
    assert verify_store(store).ok
    slow_runs = sorted(
        (r for r in _runs_of(fleet, s3_store) if "fleet/slow" in r.parameters["reference"]), key=lambda r: r.created
    )
    assert [r.state.type.value for r in slow_runs] == ["CRASHED", "COMPLETED"]
    slow = next(o for o in result.images if "fleet/slow" in o.reference)
    assert slow.result is not None
    rows = {row.digest: row.status for row in slow.result.tree}
    assert rows[small] == "present", "the re-run resumes from what the killed run committed"
    assert rows[big] == "fetched"


def test_a_deployment_that_is_not_there_is_refused_before_any_image(
    fleet: PrefectFleet, proxy: FaultProxy, tmp_path: Path
) -> None:
    from flows.mirror import mirror_sync

    store = StoreSettings(url=str(tmp_path / "store"))
    with fleet.settings(), pytest.raises(ConfigError, match="'fetch-image/elsewhere' not found: deploy it"):
        mirror_sync(config=_config(store, proxy, ["fleet/app0:v1"]), deployment="fetch-image/elsewhere")
    assert open_store(store.url).images() == []


# ------------------------------------------------------------------------------------------- shared store


def test_two_machines_uploading_one_blob_commit_it_once(
    s3_server: ObjectStoreServer, s3_store: StoreSettings, versioned_bucket: Any
) -> None:
    """Two store objects with their own S3 clients (as two machines have) both stream the same blob, single-put
    and multipart sizes: the first completed upload commits it, the second is refused (If-None-Match) and
    reported as already there; S3 holds one version of each."""
    machines = [
        open_store(s3_store.url, {**s3_server.storage_options, "default_block_size": size})
        for size in (5 * MIB, 6 * MIB)  # different options: separate filesystem objects, nothing shared
    ]
    for content in (random_layer(64 * KIB, "twice-small"), random_layer(12 * MIB, "twice-big")):
        descriptor = Descriptor(media_type="application/octet-stream", digest=digest_bytes(content), size=len(content))
        writers = [machine.writer(descriptor.digest, descriptor) for machine in machines]
        for writer in writers:
            writer.write(content)
        writers[0].commit()
        with pytest.raises(AlreadyExists):
            writers[1].commit()
        writers[1].close()
        assert machines[1].exists(descriptor)
    assert set(_versions(versioned_bucket, s3_store, "blobs").values()) == {1}


# ------------------------------------------------------------------------------------------- cancellation


def test_a_cancelled_run_stops_its_transfer_and_leaves_a_resumable_ingest(
    fleet: PrefectFleet, proxy: FaultProxy, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """issue 8: cancel a ``fetch-image`` deployment run during a big throttled layer. The run ends Cancelled,
    the transfer stops (the registry side sees the connection go), and the partial ingest on disk is taken
    up by the next run, which moves only the rest."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    huge = digest_bytes(HUGE)
    proxy.add(Fault("throttle", path_contains=huge, times=1, rate=128 * KIB))  # 64 s for the whole layer
    store_dir = tmp_path / "store"
    parameters = {"reference": f"{proxy.host}/fleet/huge:v1", "store": str(store_dir), "concurrency": 2}
    with fleet.settings():
        run = run_deployment("fetch-image/fetch-image", parameters=parameters, timeout=0)
        _wait_for(
            "the huge layer on the wire", lambda: proxy.in_flight > 0 and bool(proxy.recorded(path_contains=huge))
        )
        time.sleep(2)  # let some megabyte land in the ingest
        with get_client(sync_client=True) as client:
            cancelled_at = time.monotonic()
            client.set_flow_run_state(run.id, Cancelling())
            stopped: list[float] = []

            def ended() -> bool:
                if not stopped and proxy.in_flight == 0:
                    stopped.append(time.monotonic() - cancelled_at)
                state = client.read_flow_run(run.id).state
                return state is not None and state.is_final()

            _wait_for("the cancelled run to end", ended)
            final = client.read_flow_run(run.id).state
            ended_after = time.monotonic() - cancelled_at
    assert final is not None and final.is_cancelled(), final
    record_property("cancel_to_transfer_stopped_seconds", stopped[0] if stopped else None)
    record_property("cancel_to_cancelled_seconds", ended_after)
    print(f"cancel -> transfer stopped {stopped[0] if stopped else None} s, -> Cancelled {ended_after:.1f} s")
    assert stopped, "the transfer stopped"

    partial = [status for status in open_store(str(store_dir)).statuses() if status.expected == huge]
    assert partial and 0 < partial[0].offset < len(HUGE), partial

    from ocimirror.plan import ImageRequest
    from ocimirror.remotes import parse_reference
    from ocimirror.sync import pull

    resumed = pull([ImageRequest(reference=parse_reference(parameters["reference"]))], open_store(str(store_dir)))
    (outcome,) = resumed.images
    assert outcome.result is not None
    row = next(row for row in outcome.result.tree if row.digest == huge)
    assert 0 < row.transferred < len(HUGE), "only the rest of the layer moved"
    assert verify_store(open_store(str(store_dir))).ok


# ---------------------------------------------------------------------------------------------- parameters


def test_an_image_run_gets_its_pinned_reference_and_only_plain_settings() -> None:
    """What a child run is given: the tag it is recorded under and the digest the plan resolved, the store
    and registries as they are written in the config (a secret stays a reference), valid for fetch_image."""
    from flows.fanout import image_parameters
    from flows.fetch import fetch_image
    from ocimirror.config import RegistrySettings
    from ocimirror.plan import ImageRequest, PlannedImage
    from ocimirror.remotes import parse_reference
    from ocimirror.selection import PlatformSelection
    from tasks.clients import Target

    digest = "sha256:" + "ab" * 32
    image = PlannedImage(
        request=ImageRequest(
            reference=parse_reference("registry.example/team/app:v1"),
            selection=PlatformSelection(platforms=["linux/arm64"]),
        ),
        status="planned",
        root=Descriptor(media_type="application/vnd.oci.image.index.v1+json", digest=digest, size=100),
    )
    registries = {
        "registry.example": RegistrySettings.model_validate(
            {"credentials": {"username": "bot", "password": {"env": "APP_TOKEN"}}, "max_parallel_fetches": 4}
        )
    }
    target = Target(
        store=StoreSettings(url="s3://bucket/oci", secret_options={"secret": {"env": "AWS_SECRET"}}),  # type: ignore[dict-item]
        registries=registries,
        concurrency=6,
    )
    parameters = image_parameters(image, target)
    assert parameters["reference"] == f"registry.example/team/app:v1@{digest}"
    assert parameters["platforms"] == ["linux/arm64/v8"] and parameters["concurrency"] == 6
    assert parameters["store"]["secret_options"] == {"secret": {"env": "AWS_SECRET", "secret_block": None}}
    assert parameters["registries"]["registry.example"]["credentials"]["password"] == {
        "env": "APP_TOKEN",
        "secret_block": None,
    }
    assert parameters["registries"]["registry.example"]["max_parallel_fetches"] == 4
    fetch_image.validate_parameters(parameters)  # what the deployment run will accept
