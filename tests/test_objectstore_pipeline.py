"""The pipeline into S3 and GCS: the Prefect flow, the CLI's storage options, and concurrent syncs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ocimirror.store import open_store
from ocimirror.verify import verify_store

PULL_IN_A_PROCESS = """
import sys
from ocimirror.pull import pull
from ocimirror.remotes import Registry, parse_reference
from ocimirror.store import open_store
url, options, references = sys.argv[1], eval(sys.argv[2]), sys.argv[3:]
store = open_store(url, options)
with Registry() as registry:
    for text in references:
        ref = parse_reference(text)
        pull(registry.fetcher(ref), store, registry.resolve(ref), str(ref))
"""


def test_fetch_image_flow_into_an_object_store(object_store_server, seeded_registry, prefect_server) -> None:
    from flows.fetch import fetch_image

    url = object_store_server.new_url()
    store = {"url": url, "options": object_store_server.storage_options}
    first = fetch_image(reference=seeded_registry.reference("test/multiarch:v1"), store=store)
    again = fetch_image(reference=seeded_registry.reference("test/multiarch:v1"), store=store)

    assert first.blobs_fetched == len({d.digest for d in seeded_registry.images["test/multiarch:v1"].all_descriptors()})
    assert again.blobs_fetched == 0
    layout = open_store(url, object_store_server.storage_options)
    assert verify_store(layout).ok
    assert object_store_server.pending_uploads("") == []


def test_cli_ls_and_verify_take_storage_options(object_store_server, seeded_registry) -> None:
    url = object_store_server.new_url()
    subprocess.run(
        [sys.executable, "-c", PULL_IN_A_PROCESS, url, repr(object_store_server.storage_options),
         seeded_registry.reference("test/single:v1")],
        check=True, timeout=120,
    )  # fmt: skip
    options = [
        f"-o{key}={value}" for key, value in object_store_server.storage_options.items() if isinstance(value, str)
    ]
    listed = subprocess.run(
        [sys.executable, "-m", "ocimirror_cli", "ls", url, "--json", *options], capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert [image["reference"] for image in json.loads(listed.stdout)] == [seeded_registry.reference("test/single:v1")]
    verified = subprocess.run([sys.executable, "-m", "ocimirror_cli", "verify", url, *options], capture_output=True)
    assert verified.returncode == 0, verified.stdout


@pytest.mark.timeout(300)
def test_two_processes_syncing_into_one_bucket_keep_both_images(object_store_server, seeded_registry) -> None:
    url = object_store_server.new_url()
    options = repr(object_store_server.storage_options)
    groups = [
        [seeded_registry.reference(name) for name in ("test/single:v1", "test/shared-a:v1", "test/dockerlist:v1")],
        [seeded_registry.reference(name) for name in ("test/many:v1", "test/shared-b:v1", "test/multiarch:v1")],
    ]
    workers = [subprocess.Popen([sys.executable, "-c", PULL_IN_A_PROCESS, url, options, *group]) for group in groups]
    assert [worker.wait(timeout=240) for worker in workers] == [0, 0]

    layout = open_store(url, object_store_server.storage_options)
    tagged = {entry.annotations["org.opencontainers.image.ref.name"] for entry in layout.images()}
    assert tagged == {reference for group in groups for reference in group}
    assert verify_store(layout).ok
