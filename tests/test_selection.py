"""Platform selection: which manifests of an index are mirrored, and what is recorded about it."""

from __future__ import annotations

import pytest

from ocimirror import mediatypes as mt
from ocimirror.descriptor import Descriptor
from ocimirror.errors import NotFound
from ocimirror.selection import PlatformSelection
from tests.test_handlers import DictFetcher, leaf


def attestation_for(manifest: Descriptor) -> Descriptor:
    return leaf(f"att-{manifest.digest}", mt.OCI_MANIFEST, "unknown/unknown").model_copy(
        update={
            "annotations": {
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": manifest.digest,
            }
        }
    )


AMD64 = leaf("amd64", mt.OCI_MANIFEST, "linux/amd64")
ARM64 = leaf("arm64", mt.OCI_MANIFEST, "linux/arm64")
ARMV6 = leaf("armv6", mt.OCI_MANIFEST, "linux/arm/v6")
ARTIFACT = leaf("artifact", mt.OCI_MANIFEST)
CHILDREN = [AMD64, ARM64, ARMV6, attestation_for(AMD64), attestation_for(ARM64), ARTIFACT]
INDEX = leaf("index", mt.OCI_INDEX)


def test_platforms_are_normalised_and_deduplicated() -> None:
    selection = PlatformSelection(platforms=["linux/aarch64", "linux/arm64/v8", "x86_64"])
    assert selection.platforms == ("linux/arm64/v8", "linux/amd64")
    with pytest.raises(ValueError, match="invalid platform 'linux/'"):
        PlatformSelection(platforms=["linux/"])


def test_everything_without_platforms() -> None:
    assert PlatformSelection().select(INDEX, CHILDREN) == CHILDREN


def test_best_manifest_per_platform_with_its_attestation() -> None:
    selected = PlatformSelection(platforms=["linux/amd64"]).select(INDEX, CHILDREN)
    assert selected == [AMD64, CHILDREN[3], ARTIFACT]


def test_fallback_picks_the_best_available_variant_only() -> None:
    armv5 = leaf("armv5", mt.OCI_MANIFEST, "linux/arm/v5")
    selected = PlatformSelection(platforms=["linux/arm/v7"]).select(INDEX, [armv5, ARMV6, AMD64])
    assert selected == [ARMV6]


def test_nothing_matching_is_not_found_naming_the_platform() -> None:
    with pytest.raises(NotFound, match="linux/s390x"):
        PlatformSelection(platforms=["linux/s390x"]).select(INDEX, CHILDREN)


def test_all_metadata_handler_keeps_manifests_and_limits_layers() -> None:
    fetcher = DictFetcher()
    config, layer = leaf("cfg", mt.OCI_CONFIG), leaf("layer")
    body = {"schemaVersion": 2, "config": config.to_json(), "layers": [layer.to_json()]}
    manifest = fetcher.add(mt.OCI_MANIFEST, body)
    index = fetcher.add(
        mt.OCI_INDEX,
        {
            "schemaVersion": 2,
            "manifests": [
                manifest.model_copy(update={"platform": AMD64.platform}).to_json(),
                manifest.model_copy(update={"platform": ARM64.platform}).to_json(),
            ],
        },
    )
    handler = PlatformSelection(platforms=["linux/amd64"], all_metadata=True).children_handler(fetcher)
    amd64, arm64 = handler(index)
    assert handler(amd64) == [config, layer]
    assert handler(arm64) == [config]


def test_selection_round_trips_through_annotations() -> None:
    selection = PlatformSelection(platforms=["linux/arm64", "linux/amd64"], all_metadata=True)
    recorded = selection.annotations(INDEX)
    assert recorded["io.ocimirror.source.digest"] == INDEX.digest
    assert PlatformSelection.from_annotations(recorded) == selection
    assert PlatformSelection.from_annotations(None) == PlatformSelection()
