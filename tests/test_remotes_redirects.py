"""Where a registry may send the client: a public registry never into private, loopback or link-local space.

The decision (:func:`ocimirror.remotes.policy.redirect_allowed`) is tested with real ``ipaddress`` values,
including the cloud metadata endpoint 169.254.169.254. End to end, every server here is on loopback, so a
registry that *is* public cannot run: the client is given an address lookup that answers a public address
for the proxy's ``host:port`` (and the real answer for every other host). That lookup is the only stand-in;
the redirect, the refusal and the absence of any request to the target are real.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address

import pytest

from ocimirror.content import read_blob
from ocimirror.errors import PermanentError
from ocimirror.remotes.policy import Address, addresses_of, is_internal_address, redirect_allowed
from ocimirror.remotes.reference import parse_reference
from tests.fixtures.faultproxy import Fault, FaultProxy

#: An address of the public internet (TEST-NET ranges are not global, so a real one is used; nothing is sent).
PUBLIC = ip_address("8.8.8.8")
SINGLE = "test/single:v1"


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "0.0.0.0", "::1",
     "fe80::1", "fd00::1", "::ffff:169.254.169.254", "::ffff:127.0.0.1"],
)  # fmt: skip
def test_internal_addresses(address: str) -> None:
    assert is_internal_address(ip_address(address))
    assert not redirect_allowed([PUBLIC], [ip_address(address)])


def test_public_registry_may_redirect_to_public_addresses() -> None:
    assert redirect_allowed([PUBLIC], [ip_address("2606:4700::6810:84e5"), ip_address("104.16.132.229")])
    # One internal address among a target's answers is enough to refuse: the connection may use it.
    assert not redirect_allowed([PUBLIC], [ip_address("104.16.132.229"), ip_address("169.254.169.254")])


@pytest.mark.parametrize("registry", ["127.0.0.1", "10.0.0.5", "fe80::1"])
def test_internal_registry_may_redirect_anywhere(registry: str) -> None:
    assert redirect_allowed([ip_address(registry)], [ip_address("169.254.169.254")])
    assert redirect_allowed([ip_address(registry)], [PUBLIC])


def test_addresses_of_literals_and_names() -> None:
    assert addresses_of("127.0.0.1:5000") == [ip_address("127.0.0.1")]
    assert addresses_of("[::ffff:169.254.169.254]:80") == [ip_address("169.254.169.254")]
    assert all(address.is_loopback for address in addresses_of("localhost:5000"))
    assert addresses_of("no-such-host.invalid") == []  # unresolvable: the request itself will fail


def seen_as_public(netloc: str) -> Callable[[str], list[Address]]:
    """An address lookup that takes ``netloc`` for a public host (see the module docstring)."""
    return lambda asked: [PUBLIC] if asked == netloc else addresses_of(asked)


def biggest_layer(seeded_registry):
    image = seeded_registry.images[SINGLE]
    layer = max(image.all_descriptors(), key=lambda d: d.size)
    return layer, image.blobs[layer.digest]


@pytest.mark.registry
def test_loopback_registry_redirect_to_loopback_is_followed(fault_proxy: FaultProxy, seeded_registry, isolated_client):
    layer, content = biggest_layer(seeded_registry)
    fault_proxy.add(Fault("redirect", f"/blobs/{layer.digest}", method="GET"))
    fetcher = isolated_client().fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    assert read_blob(fetcher, layer, limit=layer.size) == content
    assert len(fault_proxy.recorded(server="redirect")) == 1


@pytest.mark.registry
def test_public_registry_redirect_into_loopback_is_refused(fault_proxy: FaultProxy, seeded_registry, isolated_client):
    layer, _ = biggest_layer(seeded_registry)
    fault_proxy.add(Fault("redirect", f"/blobs/{layer.digest}", method="GET", times=None))
    client = isolated_client(address_lookup=seen_as_public(fault_proxy.host))
    fetcher = client.fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    with pytest.raises(PermanentError, match=r"redirect from http://127\.0\.0\.1:\d+ to the private") as caught:
        read_blob(fetcher, layer, limit=layer.size)
    assert fault_proxy.redirect_url in str(caught.value) and "test/single" in str(caught.value)
    assert fault_proxy.recorded(server="redirect") == []  # not one byte asked of the internal target


@pytest.mark.registry
def test_public_registry_foreign_url_into_loopback_is_skipped(
    fault_proxy: FaultProxy, seeded_registry, isolated_client
):
    """A manifest's ``urls`` are the registry's word too: one pointing inward is no source."""
    layer, content = biggest_layer(seeded_registry)
    inward = layer.model_copy(update={"urls": [f"{fault_proxy.redirect_url}/v2/test/single/blobs/{layer.digest}"]})
    client = isolated_client(allow_foreign_urls=True, address_lookup=seen_as_public(fault_proxy.host))
    fetcher = client.fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    assert read_blob(fetcher, inward, limit=layer.size) == content
    assert fault_proxy.recorded(server="redirect") == []
    assert len(fault_proxy.recorded(server="proxy", path_contains=layer.digest)) == 1
