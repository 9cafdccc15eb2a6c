"""A hostile registry cannot make the client loop without end or download what it must refuse."""

from __future__ import annotations

import json

import pytest

from ocimirror import mediatypes
from ocimirror.errors import DocumentTooLarge, PermanentError
from ocimirror.pull import pull
from ocimirror.remotes.reference import parse_reference
from ocimirror.store import open_store
from tests.fixtures.hostile_registry import HostileRegistry


def tag_list_requests(registry: HostileRegistry) -> int:
    return sum(1 for _, path in registry.requests if "/tags/list" in path)


def test_endless_tag_paging_is_bounded_by_pages(hostile_registry: HostileRegistry, isolated_client) -> None:
    client = isolated_client(max_list_pages=20)
    with pytest.raises(PermanentError, match="more than 20 pages") as caught:
        client.tags(parse_reference(f"{hostile_registry.host}/endless/tags:v1"))
    assert f"registry {hostile_registry.host} repository endless/tags tag list" in str(caught.value)
    assert tag_list_requests(hostile_registry) == 20


def test_a_next_page_link_back_to_a_read_page_stops_at_once(hostile_registry: HostileRegistry, isolated_client) -> None:
    hostile_registry.loop = True
    with pytest.raises(PermanentError, match="leads back to a page already read") as caught:
        isolated_client().tags(parse_reference(f"{hostile_registry.host}/loop/tags:v1"))
    assert hostile_registry.host in str(caught.value)
    assert tag_list_requests(hostile_registry) == 2  # the first page, then its own link once


def test_tag_lists_are_bounded_by_entries(hostile_registry: HostileRegistry, isolated_client) -> None:
    hostile_registry.tags_per_page = 1000
    with pytest.raises(PermanentError, match="more than 2500 entries") as caught:
        isolated_client(max_list_entries=2500).tags(parse_reference(f"{hostile_registry.host}/many/tags:v1"))
    assert hostile_registry.host in str(caught.value)
    assert tag_list_requests(hostile_registry) == 3


def test_a_child_manifest_over_the_cap_is_refused_before_a_byte(hostile_registry, isolated_client, tmp_path) -> None:
    """The index is small and valid; its child declares 64 MiB. Not one request goes out for the child."""
    child_digest = "sha256:" + "ab" * 32
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_INDEX,
            "manifests": [{"mediaType": mediatypes.OCI_MANIFEST, "digest": child_digest, "size": 64 * 2**20}],
        }
    ).encode()
    hostile_registry.add_document(mediatypes.OCI_INDEX, index, "v1")
    client = isolated_client()
    ref = parse_reference(f"{hostile_registry.host}/huge/child:v1")
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(DocumentTooLarge, match=f"{child_digest} declares 67108864 bytes"):
        pull(client.fetcher(ref), store, client.resolve(ref), str(ref))
    assert not [path for _, path in hostile_registry.requests if child_digest in path]
    assert hostile_registry.bytes_sent == len(index)  # the index, once; nothing of the child
    assert store.images() == []
