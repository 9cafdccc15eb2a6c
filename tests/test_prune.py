"""Retention: prune removes exactly the names of a source that its selectors no longer select (no Prefect)."""

from __future__ import annotations

import pytest

from ocimirror.config import parse_config
from ocimirror.plan import select_tags
from ocimirror.prune import prune, prune_candidates, recorded_repository
from ocimirror.pull import recorded_name
from ocimirror.remotes.reference import parse_reference
from ocimirror.store import LayoutStore
from ocimirror.store.layout import ref_name
from tests.test_store import AMD64, STORE_KINDS, blob, make_manifest, store_location

ALPINE = "docker.io/library/alpine"


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> LayoutStore:
    return store_location(request.param, request).open()


def names(store: LayoutStore) -> list[str]:
    return [ref_name(entry) or "" for entry in store.images()]


def seed(store: LayoutStore) -> str:
    """A store with alpine tags, a digest-named alpine image and look-alike names of other repositories."""
    image = make_manifest(store, AMD64, [blob(2000, "prune")])
    for name in [
        f"{ALPINE}:3.18",
        f"{ALPINE}:3.19",
        f"{ALPINE}:3.20",
        f"{ALPINE}:3.21",
        f"{ALPINE}@{image.digest}",
        "docker.io/library/alpine-extra:1",  # another repository sharing the prefix
        "docker.io/library/alpine/sub:1",  # a sub-repository
        "ghcr.io/library/alpine:3.19",  # the same path on another registry
        "alpine:3.17",  # a short name another tool wrote: not in the form a sync records
        f"{ALPINE}:3.16@{image.digest}",  # tag and digest: a sync never records both
    ]:
        store.tag(name, image)
    return image.digest


def test_prune_removes_exactly_what_the_latest_window_no_longer_selects(store: LayoutStore) -> None:
    digest = seed(store)
    config = parse_config(
        {"store": {"url": "memory://x"}, "prune": True, "images": [{"source": "alpine", "latest": 2}]}
    )
    spec = config.images[0]
    assert spec.prunes(config)
    repository = parse_reference(spec.source)
    selected = [recorded_name(repository.with_tag(tag)) for tag in select_tags(spec, ["3.19", "3.20", "3.21"])]
    assert selected == [f"{ALPINE}:3.20", f"{ALPINE}:3.21"]

    candidates = prune_candidates(store, spec.source, selected)
    assert candidates == [f"{ALPINE}:3.18", f"{ALPINE}:3.19", f"{ALPINE}@{digest}"]
    before = names(store)
    assert prune(store, candidates) == candidates
    assert names(store) == [name for name in before if name not in candidates]
    assert prune_candidates(store, spec.source, selected) == []


def test_a_selected_digest_is_kept_and_other_repositories_are_never_candidates(store: LayoutStore) -> None:
    digest = seed(store)
    keep = [f"{ALPINE}@{digest}", f"{ALPINE}:3.21", "ghcr.io/library/alpine:3.19"]
    assert prune_candidates(store, "docker.io/library/alpine:ignored-tag", keep) == [
        f"{ALPINE}:3.18",
        f"{ALPINE}:3.19",
        f"{ALPINE}:3.20",
    ]
    assert prune_candidates(store, "ghcr.io/library/alpine", []) == ["ghcr.io/library/alpine:3.19"]
    assert prune_candidates(store, "example.com/nothing", []) == []


def test_prune_of_names_already_gone_removes_the_rest(store: LayoutStore) -> None:
    seed(store)
    assert prune(store, [f"{ALPINE}:3.18", f"{ALPINE}:nope"]) == [f"{ALPINE}:3.18"]


def test_recorded_repository() -> None:
    assert recorded_repository(f"{ALPINE}:3.20") == ALPINE
    assert recorded_repository("alpine:3.20") is None
    assert recorded_repository("not a name") is None


def test_prune_defaults_and_per_image_override() -> None:
    config = parse_config(
        {
            "store": {"url": "memory://x"},
            "images": [{"source": "alpine"}, {"source": "busybox", "prune": True}],
        }
    )
    assert [spec.prunes(config) for spec in config.images] == [False, True]
    config = parse_config(
        {"store": {"url": "memory://x"}, "prune": True, "images": [{"source": "alpine", "prune": False}]}
    )
    assert not config.images[0].prunes(config)
