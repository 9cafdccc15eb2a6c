"""Referrers end to end: discovered on the real registry (docker-registry 2.8: the tag schema fallback and
cosign's tags), mirrored with their images on both paths, recorded in index.json, seen by verify, ls, gc and
prune, served (referrers API, tag schema, cosign tags) and pulled back through serve's referrers API; hostile
registries (forged subjects, cycles, endless pages) end with clear outcomes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from ocimirror import mediatypes
from ocimirror.config import parse_config
from ocimirror.errors import NotFound
from ocimirror.gc import collect_garbage
from ocimirror.plan import ImageRequest
from ocimirror.prune import prune_candidates
from ocimirror.referrers import (
    SUBJECT_ANNOTATION,
    TAG_ANNOTATION,
    ReferrerSelection,
    entry_key,
    find_referrers,
    is_referrer_entry,
    schema_tag,
)
from ocimirror.remotes import parse_reference
from ocimirror.serve import Mapping, NameMap
from ocimirror.store import LayoutStore, open_store
from ocimirror.sync import pull, sync
from ocimirror.verify import list_images, verify_store
from ocimirror_demo.images import Image
from tests import test_sync
from tests.fixtures.referrers import SBOM_TYPE, SIGNATURE_TYPE, SignedImages
from tests.test_sync import _config

SIGNED = "test/signed:v1"
#: The fixture running a sync in this process and as a Prefect flow run (one test, both paths).
run_sync = test_sync.run_sync


def _referrer_entries(store: LayoutStore) -> dict[str, str]:
    """Stored referrers: digest -> the subject recorded for it."""
    return {e.digest: e.annotations[SUBJECT_ANNOTATION] for e in store.images() if is_referrer_entry(e)}


def _expected(signed: SignedImages) -> dict[str, str]:
    return {
        signed.signature.digest: signed.image.digest,
        signed.sbom.digest: signed.image.digest,
        signed.cosign.digest: signed.image.digest,
        signed.sbom_signature.digest: signed.sbom.digest,
    }


def _has_tree(store: LayoutStore, *images: Image) -> bool:
    return all(store.exists(descriptor) for image in images for descriptor in image.descriptors)


def test_sync_brings_referrers_only_when_asked(run_sync, signed_registry: SignedImages, tmp_path: Path) -> None:
    path = tmp_path / "store"
    config = _config(path, signed_registry.reference(SIGNED))

    off = run_sync(config)
    assert [(image.status, image.referrers) for image in off.images] == [("fetched", [])]
    assert _referrer_entries(open_store(str(path))) == {}

    on = run_sync({**config, "referrers": True})  # same image digest, but referrers not recorded: planned
    [image] = on.images
    assert image.status == "fetched", image.error
    found = {r.descriptor.digest: r.subject for r in image.referrers}
    assert found == _expected(signed_registry)
    store = open_store(str(path))
    assert _referrer_entries(store) == _expected(signed_registry)
    s = signed_registry
    assert _has_tree(store, s.signature, s.sbom, s.sbom_signature, s.cosign)
    report = verify_store(store)
    assert report.ok and report.images_checked == 5
    [summary] = list_images(store)
    assert (summary.reference, summary.referrers) == (signed_registry.reference(SIGNED), 4)

    again = run_sync({**config, "referrers": True})
    assert [image.status for image in again.images] == ["up-to-date"]
    assert len(store.images()) == 5  # recorded once, not once per sync

    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{path}:{signed_registry.reference(SIGNED)}"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert raw.stdout == signed_registry.image.content  # skopeo still reads the image among referrer entries


def test_artifact_types_select_referrers_and_a_dry_run_lists_them(signed_registry, tmp_path: Path) -> None:
    path = tmp_path / "store"
    image = {"source": f"{signed_registry.host}/test/signed", "tags": ["v1"], "referrers": [SBOM_TYPE]}
    config = parse_config({"store": {"url": str(path)}, "images": [image]})

    plan = sync(config, dry_run=True)
    [planned] = plan.images
    assert planned.status == "planned"
    assert [(r.descriptor.digest, r.artifact_type) for r in planned.referrers] == [
        (signed_registry.sbom.digest, SBOM_TYPE)
    ]
    assert planned.referrers[0].descriptor.annotations == {"org.example.sbom": "spdx"}
    assert not path.exists()  # a dry run writes nothing

    result = sync(config)
    assert result.images[0].status == "fetched", result.images[0].error
    assert _referrer_entries(open_store(str(path))) == {signed_registry.sbom.digest: signed_registry.image.digest}


def test_cli_referrers_option_alone_or_with_types(signed_registry, tmp_path: Path) -> None:
    def cli(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "ocimirror_cli", "pull", *args, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout[-3000:]
        return dict(json.loads(done.stdout))

    reference = signed_registry.reference(SIGNED)
    typed = cli(reference, "--to", str(tmp_path / "a"), "--referrers", SIGNATURE_TYPE)
    assert [r["descriptor"]["digest"] for r in typed["images"][0]["referrers"]] == [signed_registry.signature.digest]
    every = cli(reference, "--referrers", "--to", str(tmp_path / "b"))  # bare, before another option
    assert {r["descriptor"]["digest"] for r in every["images"][0]["referrers"]} == signed_registry.referrer_digests

    bad = subprocess.run(
        [sys.executable, "-m", "ocimirror_cli", "pull", reference, "--to", str(tmp_path / "c"), "--referrers=x y"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "is not a media type" in bad.stderr and "Traceback" not in bad.stderr


def test_pull_flow_with_a_platform_brings_referrers_of_the_source_index(
    prefect_server, signed_registry, tmp_path: Path
) -> None:
    from flows.fetch import pull_images

    path = tmp_path / "store"
    result = pull_images(
        references=[signed_registry.reference(SIGNED)], store=str(path), platforms=["linux/amd64"], referrers=True
    )

    [image] = result.images
    assert image.status == "fetched", image.error
    assert image.result.digest != signed_registry.image.digest  # a filtered index
    assert {r.descriptor.digest for r in image.referrers} == signed_registry.referrer_digests
    store = open_store(str(path))
    assert _referrer_entries(store) == _expected(signed_registry)
    assert verify_store(store).ok
    [summary] = list_images(store)
    assert summary.referrers == 4  # they refer to the source index, recorded on the filtered image's entry


def _mirrored(signed: SignedImages, path: Path) -> LayoutStore:
    store = open_store(str(path))
    request = ImageRequest(reference=parse_reference(signed.reference(SIGNED)), referrers=ReferrerSelection())
    [image] = pull([request], store).images
    assert image.status == "fetched", image.error
    return store


def test_serve_answers_referrers_api_tag_schema_and_cosign_tags(signed_registry, serve, tmp_path: Path) -> None:
    store = _mirrored(signed_registry, tmp_path / "store")
    server = serve(store, NameMap([Mapping("src", signed_registry.host)]))
    base = f"{server.url}/v2/src/test/signed"
    image, sbom = signed_registry.image, signed_registry.sbom

    listed = requests.get(f"{base}/referrers/{image.digest}", timeout=10)
    assert listed.status_code == 200
    assert listed.headers["Content-Type"] == mediatypes.OCI_INDEX and "OCI-Filters-Applied" not in listed.headers
    body = listed.json()
    assert body["mediaType"] == mediatypes.OCI_INDEX
    by_digest = {entry["digest"]: entry for entry in body["manifests"]}
    assert set(by_digest) == {signed_registry.signature.digest, sbom.digest}  # cosign's have no subject
    assert by_digest[sbom.digest]["artifactType"] == SBOM_TYPE
    assert by_digest[sbom.digest]["annotations"] == {"org.example.sbom": "spdx"}  # without ocimirror's own

    filtered = requests.get(f"{base}/referrers/{image.digest}", params={"artifactType": SBOM_TYPE}, timeout=10)
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [entry["digest"] for entry in filtered.json()["manifests"]] == [sbom.digest]

    manifest = image.children[0].digest  # a platform manifest: no referrers
    assert requests.get(f"{base}/referrers/{manifest}", timeout=10).json()["manifests"] == []
    assert requests.get(f"{base}/referrers/sha256:nothex", timeout=10).status_code == 400

    schema = requests.get(f"{base}/manifests/{schema_tag(sbom.digest)}", timeout=10)
    assert schema.status_code == 200 and schema.headers["Content-Type"] == mediatypes.OCI_INDEX
    assert [entry["digest"] for entry in schema.json()["manifests"]] == [signed_registry.sbom_signature.digest]
    by_digest_again = requests.get(f"{base}/manifests/{schema.headers['Docker-Content-Digest']}", timeout=10)
    assert by_digest_again.content == schema.content

    cosign = requests.get(f"{base}/manifests/{schema_tag(image.digest)}.sig", timeout=10)
    assert cosign.status_code == 200 and cosign.content == signed_registry.cosign.content
    tags = requests.get(f"{base}/tags/list", timeout=10).json()["tags"]
    assert schema_tag(image.digest) + ".sig" in tags and schema_tag(sbom.digest) in tags
    layer = signed_registry.sbom.descriptors[1]
    assert requests.get(f"{base}/blobs/{layer.digest}", timeout=10).content == signed_registry.sbom.blobs[layer.digest]


def test_round_trip_through_serve_brings_the_same_referrers(signed_registry, serve, tmp_path: Path) -> None:
    first = _mirrored(signed_registry, tmp_path / "first")
    server = serve(first, NameMap([Mapping("src", signed_registry.host)]))
    host = server.url.removeprefix("http://")
    again = open_store(str(tmp_path / "again"))
    request = ImageRequest(reference=parse_reference(f"{host}/src/{SIGNED}"), referrers=ReferrerSelection())

    [image] = pull([request], again).images

    assert image.status == "fetched" and image.source_digest == signed_registry.image.digest
    assert {r.descriptor.digest: r.subject for r in image.referrers} == _expected(signed_registry)
    assert {r.descriptor.digest for r in image.referrers if r.tag} == {signed_registry.cosign.digest}
    assert _referrer_entries(again) == _referrer_entries(first)
    assert verify_store(again).ok

    sbom_only = ImageRequest(
        reference=request.reference, referrers=ReferrerSelection(artifact_types=(SBOM_TYPE,))
    )  # asked of serve with ?artifactType=, which applies the filter and says so
    typed = open_store(str(tmp_path / "typed"))
    [image] = pull([sbom_only], typed).images
    assert [r.descriptor.digest for r in image.referrers] == [signed_registry.sbom.digest]


def test_gc_keeps_referrers_prune_never_touches_them_verify_checks_them(signed_registry, tmp_path: Path) -> None:
    store = _mirrored(signed_registry, tmp_path / "store")
    s = signed_registry
    report = collect_garbage(store, grace=0)
    assert report.blobs_deleted == 0
    assert _has_tree(store, s.image, s.signature, s.sbom, s.sbom_signature, s.cosign)
    assert prune_candidates(store, f"{s.host}/test/signed", []) == [s.reference(SIGNED)]

    store.untag(s.reference(SIGNED))  # the image goes; its referrers stay recorded (and kept) until removed
    collect_garbage(store, grace=0)
    assert _has_tree(store, s.signature, s.sbom, s.sbom_signature, s.cosign)

    entry = next(e for e in store.images() if e.digest == s.signature.digest)
    forged = {**(entry.annotations or {}), SUBJECT_ANNOTATION: s.sbom.digest}
    store.record([entry.model_copy(update={"annotations": forged})], lambda e: e.digest)
    faults = verify_store(store).faults
    assert [(f.kind, f.digest) for f in faults] == [("invalid-manifest", s.signature.digest)]
    assert f"its subject is {s.image.digest}" in faults[0].detail


# --------------------------------------------------------------------------------------------- hostile


def test_a_referrer_with_another_subject_is_ignored_not_stored(signed_registry, tmp_path: Path, caplog) -> None:
    store = open_store(str(tmp_path / "store"))
    reference = parse_reference(signed_registry.reference("test/forged:v1"))

    [image] = pull([ImageRequest(reference=reference, referrers=ReferrerSelection())], store).images

    assert image.status == "fetched" and image.referrers == []
    assert _referrer_entries(store) == {}
    assert not store.exists(signed_registry.forged.descriptor)
    claimed = json.loads(signed_registry.forged.content)["subject"]["digest"]
    assert (
        f"@{signed_registry.forged.digest} listed as a referrer of {signed_registry.forged_image.digest} "
        in caplog.text
    )
    assert f"has subject {claimed}; ignored" in caplog.text


def test_a_referrer_cycle_ends(signed_registry, tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    reference = parse_reference(signed_registry.reference("test/cycle:v1"))

    [image] = pull([ImageRequest(reference=reference, referrers=ReferrerSelection())], store).images

    assert image.status == "fetched"
    assert [(r.subject, r.descriptor.digest, r.tag) for r in image.referrers] == [
        (
            signed_registry.cycle_image.digest,
            signed_registry.cycle_signature.digest,
            schema_tag(signed_registry.cycle_image.digest) + ".sig",
        )
    ]
    assert {e.annotations[TAG_ANNOTATION] for e in store.images() if is_referrer_entry(e)} == {
        schema_tag(signed_registry.cycle_image.digest) + ".sig"
    }


@pytest.mark.parametrize("loop", [False, True])
def test_endless_referrer_pages_are_cut_off_with_a_clear_error(
    hostile_registry, isolated_client, tmp_path: Path, loop: bool
) -> None:
    hostile_registry.loop = loop
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": mediatypes.OCI_EMPTY, "digest": "sha256:" + "4" * 64, "size": 2},
            "layers": [],
        }
    ).encode()
    hostile_registry.add_document(mediatypes.OCI_MANIFEST, manifest, "v1")
    reference = parse_reference(f"{hostile_registry.host}/endless/app:v1")
    registry = isolated_client()
    root = registry.resolve(reference)

    with pytest.raises(Exception) as raised:
        find_referrers(registry, reference, [root], ReferrerSelection())

    expected = "leads back to a page already read" if loop else "more than 100 pages"
    assert expected in str(raised.value) and "referrers of" in str(raised.value)
    pages = [path for _, path in hostile_registry.requests if "/referrers/" in path]
    assert len(pages) == (2 if loop else 100)  # a loop ends at the first page read twice

    store = open_store(str(tmp_path / "store"))
    [image] = pull([ImageRequest(reference=reference, referrers=ReferrerSelection())], store).images
    assert image.status == "failed" and expected in image.error and image.failure.type == "PermanentError"
    assert store.images() == []  # the plan failed: nothing fetched, nothing tagged


def test_recording_a_referrer_replaces_its_entry_and_needs_committed_content(signed_registry, tmp_path) -> None:
    store = _mirrored(signed_registry, tmp_path / "store")
    [entry] = [e for e in store.images() if e.digest == signed_registry.sbom.digest]
    before = len(store.images())

    store.record([entry.model_copy(update={"annotations": {**entry.annotations, "org.example.n": "2"}})], entry_key)

    entries = store.images()
    assert len(entries) == before and entries[-1].annotations["org.example.n"] == "2"  # replaced, not added
    missing = entry.model_copy(update={"digest": "sha256:" + "5" * 64})
    with pytest.raises(NotFound, match="not a manifest or index committed"):
        store.record([missing], entry_key)
    assert store.images() == entries  # nothing written
