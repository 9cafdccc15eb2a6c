"""``ocimirror serve`` next to Debian's docker-registry, serving the same content on loopback.

Run from the repository root::

    python bench/serve_vs_registry.py             # 12 images x 5 rounds, 64 clients x 100 MiB; ~3 minutes
    python bench/serve_vs_registry.py --quick     # smaller, fewer rounds: a smoke run

Two measurements, each alternating the two servers (who goes first swaps every round) and reporting medians:

1. **skopeo copy of an image set**: 12 images of every kind (single manifests, OCI indexes with attestations,
   Docker manifest lists, many small layers, big layers) are pushed to ``docker-registry``, mirrored into a
   local store with ocimirror, and that store is served by ``ocimirror serve`` (a separate process, as a user
   runs it, with ``--map src=<registry>``). Each round copies the whole set with ``skopeo copy --all
   --preserve-digests`` into fresh ``dir:`` targets, one image after the other, from each server.
2. **64 concurrent clients on one large blob**: ``curl`` processes fetch the same blob at once from each
   server; wall time from the first start to the last exit gives the aggregate throughput, and the server's
   peak RSS (``VmHWM``, reset before each run) shows what serving costs in memory.

Prints one Markdown table to stdout, progress to stderr. Nothing leaves loopback; temporary directories and
both servers are gone when the script exits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as ``python bench/serve_vs_registry.py`` without installing
    sys.path.insert(0, str(REPO_ROOT))

import requests  # noqa: E402 - after the path set-up above

from ocimirror import mediatypes  # noqa: E402
from ocimirror.descriptor import Descriptor, Platform  # noqa: E402
from ocimirror.pull import pull  # noqa: E402
from ocimirror.remotes import Registry, parse_reference  # noqa: E402
from ocimirror.store import open_store  # noqa: E402
from ocimirror_demo.images import (  # noqa: E402
    DEFAULT_PLATFORMS,
    Image,
    build_index,
    build_manifest,
    build_multiarch,
    push_image,
    random_layer,
)
from ocimirror_demo.registry import LocalRegistry, free_port  # noqa: E402

MIB = 1024 * 1024
KIB = 1024
START_TIMEOUT_SECONDS = 60.0


def image_set(quick: bool) -> dict[str, Callable[[], Image]]:
    """The 12 images (``repository:tag`` -> builder); ``quick`` makes every layer smaller."""
    scale = 4 if quick else 1
    arm = Platform(os="linux", architecture="arm", variant="v7")
    images: dict[str, Callable[[], Image]] = {}
    for n in range(4):
        images[f"bench/single-{n}:v1"] = lambda n=n: build_manifest(
            [random_layer(4 * MIB // scale, f"single-{n}"), random_layer(256 * KIB, f"single-{n}-b")]
        )
    for n in range(3):
        images[f"bench/index-{n}:v1"] = lambda n=n: build_index(
            [
                build_manifest([random_layer(2 * MIB // scale, f"index-{n}-{p}-{i}") for i in range(2)], platform)
                for p, platform in enumerate(DEFAULT_PLATFORMS)
            ],
            attestations=True,
        )
    for n in range(2):
        images[f"bench/dockerlist-{n}:v1"] = lambda n=n: build_multiarch(
            f"dockerlist-{n}", (DEFAULT_PLATFORMS[0], arm), docker=True
        )
    for n in range(2):
        images[f"bench/many-{n}:v1"] = lambda n=n: build_manifest(
            [random_layer(16 * KIB, f"many-{n}-{i}") for i in range(30)]
        )
    images["bench/big:v1"] = lambda: build_manifest([random_layer(16 * MIB // scale, f"big-{i}") for i in range(2)])
    return images


def large_blob_image(size: int) -> Image:
    """One manifest over one incompressible ``size``-byte layer (not gzipped: building stays fast)."""
    content = os.urandom(size)
    layer = Descriptor.from_bytes(mediatypes.OCI_LAYER, content)
    config = Descriptor.from_bytes(mediatypes.OCI_EMPTY, b"{}")
    document = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json()],
        }
    ).encode()
    manifest = Descriptor.from_bytes(mediatypes.OCI_MANIFEST, document)
    blobs = {layer.digest: content, config.digest: b"{}", manifest.digest: document}
    return Image(manifest, blobs, descriptors=(config, layer, manifest))


# ------------------------------------------------------------------------------------------------- servers


@dataclass
class Served:
    """A server under test: its name, the host clients use, how names map, and its process id."""

    label: str
    host: str
    prefix: str
    pid: int


@contextmanager
def ocimirror_serve(store: Path, upstream: str) -> Iterator[Served]:
    """``ocimirror serve STORE --map src=UPSTREAM`` as its own process on a free loopback port."""
    port = free_port()
    command = [sys.executable, "-m", "ocimirror_cli", "serve", str(store), "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [*command, "--map", f"src={upstream}"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ocimirror serve did not start")
            time.sleep(0.05)
        yield Served("ocimirror serve", f"127.0.0.1:{port}", "src/", process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    """A process's peak (``VmHWM``) or current (``VmRSS``) resident set, in MiB."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/{pid}/status: RSS needs Linux")
    return int(match[1]) / 1024


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# ------------------------------------------------------------------------------------------------ measures


def copy_set(server: Served, names: list[str], scratch: Path) -> float:
    """Wall seconds for skopeo to copy every image of ``names`` from ``server``, one after the other."""
    scratch.mkdir()
    started = time.perf_counter()
    for n, name in enumerate(names):
        result = subprocess.run(
            [
                "skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
                f"docker://{server.host}/{server.prefix}{name}", f"dir:{scratch / str(n)}",
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"skopeo copy of {name} from {server.label} failed: {result.stderr}")
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch)
    return elapsed


def fetch_concurrently(
    server: Served, repository: str, digest: str, size: int, clients: int
) -> tuple[float, float, float]:
    """``clients`` curl processes fetching one blob at once: wall seconds, and the server's RSS before and its
    peak during the run, in MiB."""
    url = f"http://{server.host}/v2/{server.prefix}{repository}/blobs/{digest}"
    reset_peak_rss(server.pid)
    before = rss_mib(server.pid, "VmRSS")
    started = time.perf_counter()
    processes = [
        subprocess.Popen(["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url], stdout=subprocess.PIPE)
        for _ in range(clients)
    ]
    received = [int(process.communicate()[0] or 0) for process in processes]
    elapsed = time.perf_counter() - started
    if any(process.returncode for process in processes) or set(received) != {size}:
        raise RuntimeError(f"a client of {server.label} did not get the whole blob: {sorted(set(received))}")
    return round(elapsed, 2), round(before), round(rss_mib(server.pid))


def alternate(rounds: int, servers: list[Served], measure: Callable[[Served], object]) -> dict[str, list[object]]:
    """Run ``measure`` on every server per round; the first server of a round goes last in the next one."""
    results: dict[str, list[object]] = {server.label: [] for server in servers}
    for round_number in range(rounds):
        order = servers if round_number % 2 == 0 else list(reversed(servers))
        for server in order:
            results[server.label].append(measure(server))
            print(f"  round {round_number + 1}: {server.label}: {results[server.label][-1]}", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller images, 2 rounds, a 16 MiB blob")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per measurement (default 5)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients on the large blob")
    parser.add_argument("--blob-mib", type=int, default=None, help="size of the large blob (default 100)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    blob_size = (args.blob_mib or (16 if args.quick else 100)) * MIB
    work = Path(tempfile.mkdtemp(prefix="ocimirror-bench-serve-"))
    try:
        with LocalRegistry() as registry:
            print("building and pushing the image set...", file=sys.stderr)
            names = list(image_set(args.quick))
            total = 0
            for name, build in image_set(args.quick).items():
                image = build()
                total += sum(descriptor.size for descriptor in image.all_descriptors())
                repository, _, tag = name.partition(":")
                push_image(registry.url, repository, tag, image)
            big = large_blob_image(blob_size)
            push_image(registry.url, "bench/large", "v1", big)
            big_layer = big.all_descriptors()[1]
            del big
            print("mirroring it into a local store...", file=sys.stderr)
            store = open_store(str(work / "store"))
            with Registry() as client:
                for name in [*names, "bench/large:v1"]:
                    reference = parse_reference(f"{registry.host}/{name}")
                    pull(client.fetcher(reference), store, client.resolve(reference), str(reference))
            assert registry.pid is not None
            upstream = Served("docker-registry", registry.host, "", registry.pid)
            with ocimirror_serve(work / "store", registry.host) as served:
                servers = [upstream, served]
                print(f"skopeo copy of {len(names)} images, {rounds} rounds:", file=sys.stderr)
                copies = alternate(rounds, servers, lambda server: round(copy_set(server, names, work / "copy"), 2))
                print(f"{args.clients} clients x {blob_size // MIB} MiB, {rounds} rounds:", file=sys.stderr)
                fetches = alternate(
                    rounds,
                    servers,
                    lambda server: fetch_concurrently(
                        server, "bench/large", big_layer.digest, big_layer.size, args.clients
                    ),
                )
        print(render(names, total, copies, fetches, args.clients, blob_size))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def render(
    names: list[str],
    total: int,
    copies: dict[str, list[object]],
    fetches: dict[str, list[object]],
    clients: int,
    blob_size: int,
) -> str:
    reference = statistics.median(copies["docker-registry"])  # type: ignore[type-var]
    lines = [
        f"skopeo copy --all of {len(names)} images ({total / 1e6:.0f} MB), median of {len(copies['docker-registry'])}:",
        "",
        "| server | wall s (median) | runs | vs docker-registry |",
        "|---|---:|---|---:|",
    ]
    for label, runs in copies.items():
        median = statistics.median(runs)  # type: ignore[type-var]
        lines.append(f"| {label} | {median:.2f} | {', '.join(map(str, runs))} | {median / reference:.2f}x |")
    lines += [
        "",
        f"{clients} concurrent curl clients fetching one {blob_size // MIB} MiB blob, median of the rounds:",
        "",
        "| server | wall s | aggregate MB/s | RSS before MiB | peak RSS MiB (max of rounds) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, runs in fetches.items():
        walls = [wall for wall, _, _ in runs]  # type: ignore[misc]
        before = min(rss for _, rss, _ in runs)  # type: ignore[misc]
        peak = max(peak for _, _, peak in runs)  # type: ignore[misc]
        wall = statistics.median(walls)
        throughput = clients * blob_size / wall / 1e6
        lines.append(f"| {label} | {wall:.2f} | {throughput:.0f} | {before:.0f} | {peak:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
