"""The handler framework, case by case against containerd's semantics (README, "How it works")."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from ocimirror import mediatypes as mt
from ocimirror.descriptor import Descriptor, Platform
from ocimirror.digest import digest_bytes
from ocimirror.errors import InvalidManifest, NotFound, UnsupportedSchema1
from ocimirror.handlers import (
    SkipDescriptor,
    StopHandler,
    children_handler,
    dispatch,
    filter_manifest_by_platform,
    filter_platforms,
    handlers,
    limit_manifests,
    walk,
)
from ocimirror.platforms import only, parse_platform


def leaf(name: str, media_type: str = mt.OCI_LAYER_GZIP, platform: str | None = None) -> Descriptor:
    """A descriptor whose digest is derived from ``name``, so trees are easy to write down."""
    return Descriptor(
        media_type=media_type,
        digest=digest_bytes(name.encode()),
        size=len(name),
        platform=parse_platform(platform) if platform else None,
        annotations={"name": name},
    )


def name(descriptor: Descriptor) -> str:
    return (descriptor.annotations or {})["name"]


def tree_handler(tree: dict[str, list[Descriptor]]):
    return lambda d: tree.get(name(d), [])


class DictFetcher:
    """Content by digest from a dict: the smallest Fetcher, for reading documents in handler tests."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def add(self, media_type: str, document: dict, **fields) -> Descriptor:
        content = json.dumps(document).encode()
        descriptor = Descriptor.from_bytes(media_type, content, **fields)
        self.blobs[descriptor.digest] = content
        return descriptor

    def fetch(self, descriptor: Descriptor, offset: int = 0) -> Iterator[bytes]:
        yield self.blobs[descriptor.digest][offset:]


# --- handlers(): order, stop, errors -------------------------------------------------------------


def test_handlers_run_in_order_and_concatenate_children() -> None:
    calls: list[str] = []
    a, b, c = leaf("a"), leaf("b"), leaf("c")

    def first(d):
        calls.append("first")
        return [a]

    def second(d):
        calls.append("second")
        return [b, c]

    assert handlers(first, second)(leaf("root")) == [a, b, c]
    assert calls == ["first", "second"]


def test_stop_handler_ends_chain_keeping_children_so_far() -> None:
    a = leaf("a")
    later = []

    def stop(d):
        raise StopHandler

    result = handlers(lambda d: [a], stop, lambda d: later.append(d) or [leaf("x")])(leaf("root"))
    assert result == [a]
    assert later == []


def test_other_errors_abort_the_chain() -> None:
    def boom(d):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        handlers(lambda d: [leaf("a")], boom)(leaf("root"))


# --- walk --------------------------------------------------------------------------------------------

TREE = {
    "root": [leaf("m1"), leaf("m2")],
    "m1": [leaf("c1"), leaf("l1")],
    "m2": [leaf("c2"), leaf("l2")],
}


def test_walk_is_depth_first_in_order() -> None:
    seen: list[str] = []

    def record(d):
        seen.append(name(d))
        return TREE.get(name(d), [])

    walk(record, [leaf("root")])
    assert seen == ["root", "m1", "c1", "l1", "m2", "c2", "l2"]


def test_walk_skip_descriptor_skips_children_only() -> None:
    seen: list[str] = []

    def record(d):
        seen.append(name(d))
        if name(d) == "m1":
            raise SkipDescriptor
        return TREE.get(name(d), [])

    walk(record, [leaf("root")])
    assert seen == ["root", "m1", "m2", "c2", "l2"]


def test_walk_raises_first_error() -> None:
    def fail_on_m1(d):
        if name(d) == "m1":
            raise NotFound("m1 is gone")
        return TREE.get(name(d), [])

    with pytest.raises(NotFound, match="m1 is gone"):
        walk(fail_on_m1, [leaf("root")])


# --- dispatch ---------------------------------------------------------------------------------------


def test_dispatch_visits_everything_once_deduplicating_by_digest() -> None:
    shared = leaf("shared-layer")
    tree = {"root": [leaf("m1"), leaf("m2")], "m1": [shared, leaf("l1")], "m2": [shared, leaf("l2")]}
    seen: list[str] = []
    lock = threading.Lock()

    def record(d):
        with lock:
            seen.append(name(d))
        return tree.get(name(d), [])

    dispatch(record, [leaf("root")], limit=4)
    assert sorted(seen) == sorted(["root", "m1", "m2", "shared-layer", "l1", "l2"])


def test_dispatch_runs_siblings_in_parallel_within_the_limit() -> None:
    siblings = [leaf(f"l{i}") for i in range(12)]
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow(d):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return siblings if name(d) == "root" else []

    dispatch(slow, [leaf("root")], limit=3)
    assert peak == 3


def test_dispatch_first_error_cancels_the_rest_and_is_raised() -> None:
    siblings = [leaf("bad")] + [leaf(f"l{i}") for i in range(20)]
    started: list[str] = []

    def handler(d):
        started.append(name(d))
        if name(d) == "root":
            return siblings
        if name(d) == "bad":
            raise InvalidManifest("bad manifest")
        time.sleep(0.05)
        return []

    with pytest.raises(InvalidManifest, match="bad manifest"):
        dispatch(handler, [leaf("root")], limit=1)
    # With one slot, "bad" runs first and nothing queued after it is started.
    assert started == ["root", "bad"]


def test_dispatch_skip_descriptor_is_success() -> None:
    seen: list[str] = []

    def handler(d):
        seen.append(name(d))
        if name(d) == "m1":
            raise SkipDescriptor
        return TREE.get(name(d), [])

    dispatch(handler, [leaf("root")], limit=1)
    assert sorted(seen) == sorted(["root", "m1", "m2", "c2", "l2"])


@pytest.mark.timeout(20)
def test_dispatch_limit_one_deep_tree_does_not_deadlock() -> None:
    depth = 200
    chain = {f"n{i}": [leaf(f"n{i + 1}"), leaf(f"x{i}")] for i in range(depth)}
    seen: list[str] = []

    def handler(d):
        seen.append(name(d))
        return chain.get(name(d), [])

    dispatch(handler, [leaf("n0")], limit=1)
    assert len(seen) == 2 * depth + 1


def test_dispatch_rejects_a_zero_limit() -> None:
    with pytest.raises(ValueError):
        dispatch(lambda d: [], [leaf("root")], limit=0)


# --- children ---------------------------------------------------------------------------------------


def _image(fetcher: DictFetcher) -> tuple[Descriptor, list[Descriptor]]:
    config = leaf("config", mt.OCI_CONFIG)
    layers = [leaf("layer-1"), leaf("layer-2")]
    subject = leaf("subject", mt.OCI_MANIFEST)
    manifest = fetcher.add(
        mt.OCI_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
            "subject": subject.to_json(),
        },
    )
    return manifest, [config, *layers]


def test_children_of_a_manifest_are_config_then_layers_not_subject() -> None:
    fetcher = DictFetcher()
    manifest, expected = _image(fetcher)
    assert children_handler(fetcher)(manifest) == expected


def test_children_of_an_index_are_its_manifests() -> None:
    fetcher = DictFetcher()
    manifest, _ = _image(fetcher)
    listed = manifest.model_copy(update={"platform": Platform(os="linux", architecture="amd64")})
    index = fetcher.add(mt.OCI_INDEX, {"schemaVersion": 2, "manifests": [listed.to_json()]})
    assert children_handler(fetcher)(index) == [listed]


def test_blobs_have_no_children() -> None:
    assert children_handler(DictFetcher())(leaf("layer")) == []
    assert children_handler(DictFetcher())(leaf("config", mt.DOCKER_CONFIG)) == []


def test_children_validate_body_against_declared_media_type() -> None:
    fetcher = DictFetcher()
    manifest, _ = _image(fetcher)
    index_body = fetcher.add(mt.OCI_MANIFEST, {"schemaVersion": 2, "manifests": [manifest.to_json()]})
    with pytest.raises(InvalidManifest, match="it is an index"):
        children_handler(fetcher)(index_body)
    disguised = fetcher.add(mt.OCI_INDEX, {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "manifests": []})
    with pytest.raises(InvalidManifest, match="body declares mediaType"):
        children_handler(fetcher)(disguised)


def test_schema1_is_refused_clearly() -> None:
    fetcher = DictFetcher()
    schema1 = fetcher.add(mt.DOCKER_SCHEMA1_SIGNED, {"schemaVersion": 1, "fsLayers": []})
    with pytest.raises(UnsupportedSchema1, match="schema 1"):
        children_handler(fetcher)(schema1)
    sneaky = fetcher.add(mt.DOCKER_MANIFEST, {"schemaVersion": 1, "fsLayers": []})
    with pytest.raises(UnsupportedSchema1):
        children_handler(fetcher)(sneaky)


# --- platform filters -------------------------------------------------------------------------------

AMD64 = leaf("amd64", mt.OCI_MANIFEST, "linux/amd64")
ARM64 = leaf("arm64", mt.OCI_MANIFEST, "linux/arm64")
ARMV6 = leaf("armv6", mt.OCI_MANIFEST, "linux/arm/v6")
ARMV7 = leaf("armv7", mt.OCI_MANIFEST, "linux/arm/v7")
NOPLATFORM = leaf("artifact", mt.OCI_MANIFEST)
INDEX = leaf("index", mt.OCI_INDEX)


def test_filter_platforms_keeps_matching_and_platformless_children() -> None:
    children = [AMD64, ARM64, NOPLATFORM, ARMV7]
    handler = filter_platforms(lambda d: children, only("linux/arm64"))
    assert handler(INDEX) == [ARM64, NOPLATFORM, ARMV7]  # arm64 accepts 32-bit arm, as in containerd
    assert filter_platforms(lambda d: children, None)(INDEX) == children


def test_limit_manifests_orders_by_preference_and_keeps_n() -> None:
    children = [NOPLATFORM, ARMV6, AMD64, ARMV7]
    comparer = only("linux/arm/v7")
    assert limit_manifests(lambda d: children, comparer, 1)(INDEX) == [ARMV7]
    ordered = limit_manifests(lambda d: children, comparer, 0)(INDEX)
    assert ordered[:2] == [ARMV7, ARMV6]
    assert ordered[-1] == NOPLATFORM


def test_limit_manifests_with_nothing_left_is_not_found() -> None:
    handler = limit_manifests(filter_platforms(lambda d: [AMD64], only("linux/s390x")), only("linux/s390x"), 1)
    with pytest.raises(NotFound):
        handler(INDEX)


def test_limit_manifests_only_limits_under_an_index() -> None:
    layers = [leaf("l1"), leaf("l2")]
    assert limit_manifests(lambda d: layers, only("linux/amd64"), 1)(leaf("m", mt.OCI_MANIFEST)) == layers


def test_metadata_only_keeps_config_for_other_platforms() -> None:
    config, layer = leaf("cfg", mt.OCI_CONFIG), leaf("layer")
    handler = filter_manifest_by_platform(lambda d: [config, layer], only("linux/amd64"))
    assert handler(AMD64) == [config, layer]
    assert handler(ARM64) == [config]
    assert handler(NOPLATFORM) == [config, layer]  # no platform information: everything
    assert handler(INDEX) == [config, layer]  # only manifests are filtered
