"""The registry client under network faults, injected by a real proxy in front of a real registry."""

from __future__ import annotations

import base64
import time
import tracemalloc
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from ocimirror.content import read_blob
from ocimirror.digest import digest_bytes
from ocimirror.errors import ConfigError, PermanentError, SizeMismatch, TransientError, Unauthorized
from ocimirror.remotes.config import Credentials, RegistryConfig
from ocimirror.remotes.policy import make_retry
from ocimirror.remotes.reference import parse_reference
from tests.fixtures.faultproxy import Fault, FaultProxy, LoopbackHTTPServer
from tests.fixtures.registry import TOKEN_SERVICE, AuthenticatedRegistry, SeededRegistry, TokenServer

pytestmark = pytest.mark.registry

SINGLE = "test/single:v1"


def biggest_layer(seeded_registry: SeededRegistry, name: str = SINGLE):
    image = seeded_registry.images[name]
    layer = max(image.all_descriptors(), key=lambda d: d.size)
    return layer, image.blobs[layer.digest]


def test_cut_body_resumes_with_range(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    layer, content = biggest_layer(seeded_registry)
    cut = fault_proxy.add(Fault("cut", f"/blobs/{layer.digest}", method="GET"))
    fetcher = isolated_client().fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    assert read_blob(fetcher, layer, limit=layer.size) == content
    assert cut.hits == 1
    gets = fault_proxy.recorded(path_contains=f"/blobs/{layer.digest}")
    assert "Range" not in gets[0].headers
    # Resumed after the last whole chunk received before the cut at half the body.
    resumed_at = int(gets[1].headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= layer.size // 2 and len(gets) == 2


def test_stalled_body_times_out_and_resumes(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    layer, content = biggest_layer(seeded_registry)
    fault_proxy.add(Fault("stall", f"/blobs/{layer.digest}", method="GET", delay=2.0))
    fetcher = isolated_client(timeout=(5.0, 0.5)).fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    started = time.monotonic()
    assert read_blob(fetcher, layer, limit=layer.size) == content
    assert time.monotonic() - started < 1.9  # the read timeout fired; the stall was not waited out
    assert "Range" in fault_proxy.recorded(path_contains=f"/blobs/{layer.digest}")[-1].headers


def test_cut_body_with_server_ignoring_range(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    layer, content = biggest_layer(seeded_registry)
    fault_proxy.add(Fault("cut", f"/blobs/{layer.digest}", method="GET"))
    ignored = fault_proxy.add(Fault("ignore_range", f"/blobs/{layer.digest}", method="GET", times=None))
    fetcher = isolated_client().fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    chunks = list(fetcher.fetch(layer))
    assert b"".join(chunks) == content and ignored.hits == 1
    assert sum(map(len, chunks)) == layer.size  # the re-sent prefix was discarded, not yielded twice


def test_resume_from_offset_after_cut(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    layer, content = biggest_layer(seeded_registry)
    fault_proxy.add(Fault("cut", f"/blobs/{layer.digest}", method="GET"))
    fetcher = isolated_client().fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    offset = 1000
    assert b"".join(fetcher.fetch(layer, offset)) == content[offset:]


def test_body_broken_every_time_gives_up(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    # A blob smaller than one chunk, cut every time: no attempt makes progress.
    layer = min(seeded_registry.images[SINGLE].all_descriptors(), key=lambda d: d.size)
    fault_proxy.add(Fault("cut", f"/blobs/{layer.digest}", method="GET", times=None))
    fetcher = isolated_client(retry=make_retry(total=2, backoff_factor=0)).fetcher(
        parse_reference(f"{fault_proxy.host}/{SINGLE}")
    )
    with pytest.raises(TransientError, match="giving up"):
        b"".join(fetcher.fetch(layer))
    # One first attempt plus the retries without progress, then no more.
    assert len(fault_proxy.recorded(path_contains=f"/blobs/{layer.digest}")) == 3


def test_server_sending_more_than_declared(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    layer, _ = biggest_layer(seeded_registry)
    fault_proxy.add(Fault("extend", f"/blobs/{layer.digest}", method="GET"))
    fetcher = isolated_client().fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    with pytest.raises(SizeMismatch, match="more than the declared"):
        list(fetcher.fetch(layer))


def test_503_once_then_success(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    image = seeded_registry.images[SINGLE]
    fault = fault_proxy.add(Fault("status", "/manifests/", method="HEAD", status=503))
    assert isolated_client().resolve(parse_reference(f"{fault_proxy.host}/{SINGLE}")).digest == image.digest
    assert fault.hits == 1 and len(fault_proxy.recorded(path_contains="/manifests/")) == 2


@pytest.mark.parametrize("as_date", [False, True])
def test_429_retry_after_is_honoured(fault_proxy, seeded_registry, isolated_client, as_date: bool) -> None:
    layer, content = biggest_layer(seeded_registry)
    retry_after = formatdate(time.time() + 2, usegmt=True) if as_date else "1"
    fault_proxy.add(Fault("status", f"/blobs/{layer.digest}", status=429, headers={"Retry-After": retry_after}))
    fetcher = isolated_client().fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    started = time.monotonic()
    assert read_blob(fetcher, layer, limit=layer.size) == content
    assert time.monotonic() - started >= 0.9


def test_429_without_end_is_transient_with_retry_after(fault_proxy, seeded_registry, isolated_client) -> None:
    fault_proxy.add(Fault("status", "/manifests/", status=429, times=None, headers={"Retry-After": "120"}))
    client = isolated_client(retry=make_retry(total=1, backoff_factor=0, retry_after_max=0))
    with pytest.raises(TransientError) as caught:
        client.resolve(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    assert caught.value.retry_after == 120
    assert "429" in str(caught.value) and "test/single" in str(caught.value)
    assert caught.value.to_dict() == {
        "type": "TransientError",
        "message": str(caught.value),
        "transient": True,
        "status": 429,
        "retry_after": 120,
    }


def test_error_codes_of_a_get_answer(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    layer, _ = biggest_layer(seeded_registry)
    fault_proxy.add(Fault("status", f"/blobs/{layer.digest}", status=400))
    fetcher = isolated_client().fetcher(parse_reference(f"{fault_proxy.host}/{SINGLE}"))
    with pytest.raises(PermanentError) as caught:
        list(fetcher.fetch(layer))
    assert (caught.value.status, caught.value.codes) == (400, ("INJECTED",))


def test_redirect_to_another_host_gets_no_authorization(
    basic_registry: AuthenticatedRegistry, make_fault_proxy, isolated_client
) -> None:
    from ocimirror_demo.images import build_manifest, push_image, random_layer

    image = build_manifest([random_layer(4096, "redirected")])
    push_image(basic_registry.url, "private/redirected", "v1", image, session=basic_registry.session())
    presigned = "Basic " + base64.b64encode(f"{basic_registry.username}:{basic_registry.password}".encode()).decode()
    proxy = make_fault_proxy(basic_registry.url, upstream_auth=presigned)
    proxy.add(Fault("redirect", "/blobs/", method="GET", times=None))
    credentials = Credentials(username=basic_registry.username, password=SecretStr(basic_registry.password))
    client = isolated_client({proxy.host: RegistryConfig(credentials=credentials)})
    ref = parse_reference(f"{proxy.host}/private/redirected:v1")
    assert client.resolve(ref).digest == image.digest  # the registry's Basic challenge is learnt here
    fetcher = client.fetcher(ref)
    for descriptor in image.all_descriptors():
        assert read_blob(fetcher, descriptor, limit=1 << 20) == image.blobs[descriptor.digest]
    redirected = proxy.recorded(server="redirect")
    assert len(redirected) == 2  # config and layer
    assert all("authorization" not in {k.lower() for k in r.headers} for r in redirected)
    assert any("Authorization" in r.headers for r in proxy.recorded(server="proxy", path_contains="/blobs/"))


def test_foreign_urls_only_when_allowed(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    layer, content = biggest_layer(seeded_registry)
    foreign = f"{fault_proxy.redirect_url}/v2/test/single/blobs/{layer.digest}"
    with_urls = layer.model_copy(update={"urls": [foreign]})
    ref = parse_reference(seeded_registry.reference(SINGLE))
    assert read_blob(isolated_client().fetcher(ref), with_urls, limit=layer.size) == content
    assert fault_proxy.recorded() == []
    allowed = isolated_client(allow_foreign_urls=True).fetcher(ref)
    assert read_blob(allowed, with_urls, limit=layer.size) == content
    assert [r.path for r in fault_proxy.recorded(server="redirect")] == [f"/v2/test/single/blobs/{layer.digest}"]


def test_foreign_url_missing_falls_back_to_registry(fault_proxy, seeded_registry, isolated_client) -> None:
    layer, content = biggest_layer(seeded_registry)
    missing = layer.model_copy(update={"urls": [f"{fault_proxy.redirect_url}/nowhere/{layer.digest}"]})
    fetcher = isolated_client(allow_foreign_urls=True).fetcher(parse_reference(seeded_registry.reference(SINGLE)))
    assert read_blob(fetcher, missing, limit=layer.size) == content


@pytest.mark.registry
def test_insecure_registry_sends_no_password_over_plain_http_to_another_token_host(
    token_server: TokenServer, seeded_registry: SeededRegistry, make_fault_proxy, isolated_client
) -> None:
    """``insecure`` is what the user says of one host. A challenge from it naming a plain-HTTP realm on
    another host must not carry the password there in the clear. (``[::ffff:127.0.0.1]`` is another host to
    the client's rules, yet the bytes stay on loopback.)"""
    port = urlsplit(token_server.realm).port
    foreign_realm = f"http://[::ffff:127.0.0.1]:{port}/token"
    proxy = make_fault_proxy(seeded_registry.url)
    challenge = f'Bearer realm="{foreign_realm}",service="{TOKEN_SERVICE}"'
    proxy.add(Fault("status", "/v2/", times=None, status=401, headers={"WWW-Authenticate": challenge}))
    credentials = Credentials(username="bob", password=SecretStr("hunter2"))
    client = isolated_client({proxy.host: RegistryConfig(insecure=True, credentials=credentials)})
    token_server.reset()
    with pytest.raises(ConfigError, match="plain HTTP to"):
        client.resolve(parse_reference(f"{proxy.host}/{SINGLE}"))
    assert not token_server.requests


class _EndlessTokenHandler(BaseHTTPRequestHandler):
    """A token endpoint whose answer is valid JSON padded to 64 MiB, streamed without Content-Length."""

    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            self.wfile.write(b'{"token": "t", "padding": "')
            for _ in range(64):
                self.wfile.write(b"A" * 2**20)
            self.wfile.write(b'"}')
        except ConnectionError:
            pass  # the client stopped reading, as it should


@pytest.mark.registry
def test_token_response_is_read_only_up_to_a_limit(
    seeded_registry: SeededRegistry, make_fault_proxy, isolated_client
) -> None:
    """The realm is whatever the registry names; its answer must not be read whole into memory."""
    token_endpoint = LoopbackHTTPServer(_EndlessTokenHandler)
    token_endpoint.start("endless-token")
    try:
        proxy = make_fault_proxy(seeded_registry.url)
        challenge = f'Bearer realm="{token_endpoint.url}/token",service="s"'
        proxy.add(Fault("status", "/v2/", times=None, status=401, headers={"WWW-Authenticate": challenge}))
        client = isolated_client()
        tracemalloc.start()
        try:
            with pytest.raises(Unauthorized, match="token response over"):
                client.resolve(parse_reference(f"{proxy.host}/{SINGLE}"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 * 2**20
    finally:
        token_endpoint.stop()


def test_foreign_url_refused_by_the_plain_http_rule_is_skipped(fault_proxy, seeded_registry, isolated_client) -> None:
    """A layer's ``urls`` come from the manifest, not the user: one the plain-HTTP rule refuses is not a
    source (and not an error); the registry serves the layer. (``[::ffff:127.0.0.1]`` counts as another
    host, while staying on loopback.)"""
    layer, content = biggest_layer(seeded_registry)
    port = urlsplit(fault_proxy.redirect_url).port
    url = f"http://[::ffff:127.0.0.1]:{port}/v2/test/single/blobs/{layer.digest}"
    plain = layer.model_copy(update={"urls": [url]})
    fetcher = isolated_client(allow_foreign_urls=True).fetcher(parse_reference(seeded_registry.reference(SINGLE)))
    assert read_blob(fetcher, plain, limit=layer.size) == content
    assert fault_proxy.recorded(server="redirect") == []


class _OddLengthHandler(BaseHTTPRequestHandler):
    """A registry whose HEAD answers a ``Content-Length`` of a Unicode digit (``str.isdigit`` says yes,
    ``int`` says no); GET sends the manifest as it is."""

    protocol_version = "HTTP/1.1"
    manifest = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def _headers(self, length: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.index.v1+json")
        self.send_header("Docker-Content-Digest", digest_bytes(self.manifest))
        self.send_header("Content-Length", length)
        self.end_headers()

    def do_HEAD(self) -> None:
        self._headers("\u00b2")

    def do_GET(self) -> None:
        self._headers(str(len(self.manifest)))
        self.wfile.write(self.manifest)


def test_a_content_length_that_is_no_number_is_not_trusted(isolated_client) -> None:
    server = LoopbackHTTPServer(_OddLengthHandler)
    server.start("odd-length")
    try:
        host = server.url.removeprefix("http://")
        resolved = isolated_client().resolve(parse_reference(f"{host}/odd/index:v1"))
        assert resolved.digest == digest_bytes(_OddLengthHandler.manifest)
        assert resolved.size == len(_OddLengthHandler.manifest)
    finally:
        server.stop()
