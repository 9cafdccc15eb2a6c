"""A whole sync, every way a user runs it, next to skopeo: twelve images from one loopback registry.

Run from the repository root::

    python bench/sync_set.py                 # scale 1 (~410 MB), 3 alternating rounds
    python bench/sync_set.py --scale 4       # ~1.6 GB: the figures of the README's performance table
    python bench/sync_set.py --scale 0.1 --repeat 1   # a smoke run

The set: a multi-arch OCI index with attestations, an image of 60 layers, an image with one large layer
(~300 MB at scale 4), eight images sharing a base layer, and a Docker schema 2 manifest list. Each round
copies the whole set cold into a fresh OCI layout with every contender, in turn (alternating, so a
slower minute of the machine hits them all), then syncs again where a contender has a notion of "nothing
to do":

- ``skopeo``: one ``skopeo copy`` (``--all`` for indexes) per image into one layout, as a script would;
- ``core sync``: ``ocimirror.sync.sync`` in this process, no Prefect;
- ``CLI sync``: ``python -m ocimirror_cli sync CONFIG`` with no Prefect API configured;
- ``CLI sync --prefect``: the same command against a running ``prefect server start``;
- ``mirror_sync flow``: the flow in this process against that server (heartbeats on, as deployed).

Reported per contender: median wall seconds, CPU seconds (user + system, children included), peak RSS,
and the task runs the server recorded. Nothing leaves loopback; every directory, the registry and the
Prefect server are gone when the script exits.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from compare_skopeo import (
    GNU_TIME,
    MIB,
    REPO_ROOT,
    fresh_dir,
    isolate_prefect,
    measure,
    say,
    settled_task_runs,
)

from ocimirror_demo.images import DEFAULT_PLATFORMS, Image, build_index, build_manifest, push_image, random_layer
from ocimirror_demo.registry import LocalRegistry


@dataclass(frozen=True)
class SetImage:
    repository: str
    tag: str
    build: Callable[[], Image]
    index: bool = False


def image_set(scale: float) -> list[SetImage]:
    """The twelve images, their blob sizes multiplied by ``scale``."""

    def size(mib: float) -> int:
        return max(1024, int(mib * MIB * scale))

    def multiarch() -> Image:
        manifests = [
            build_manifest((random_layer(size(16), f"multi-{p}-{n}") for n in range(2)), p) for p in DEFAULT_PLATFORMS
        ]
        return build_index(manifests, attestations=True)

    def dockerlist() -> Image:
        manifests = [build_manifest([random_layer(size(32), f"list-{p}")], p, docker=True) for p in DEFAULT_PLATFORMS]
        return build_index(manifests, docker=True)

    def shared(n: int) -> Callable[[], Image]:
        return lambda: build_manifest([random_layer(size(64), "shared-base"), random_layer(size(8), f"app-{n}")])

    return [
        SetImage("set/multiarch", "v1", multiarch, index=True),
        SetImage("set/layers60", "v1", lambda: build_manifest(random_layer(size(1), f"l60-{n}") for n in range(60))),
        SetImage("set/big", "v1", lambda: build_manifest([random_layer(size(75), "big")])),
        *[SetImage(f"set/app{n}", "v1", shared(n)) for n in range(8)],
        SetImage("set/dockerlist", "v1", dockerlist, index=True),
    ]


def push_set(registry: LocalRegistry, images: Sequence[SetImage]) -> int:
    """Push every image; the total size of the distinct blobs a full copy moves."""
    blobs: dict[str, int] = {}
    for image in images:
        built = image.build()
        push_image(registry.url, image.repository, image.tag, built)
        blobs |= {d.digest: d.size for d in built.all_descriptors()}
    return sum(blobs.values())


# ---------------------------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    seconds: float
    cpu: float
    rss_kib: int
    task_runs: int | None = None


@dataclass
class Contender:
    name: str
    run: Callable[[Path], Sample]
    samples: list[Sample] = field(default_factory=list)


def run_timed(argv: Sequence[str], env: dict[str, str] | None = None) -> Sample:
    """A command under GNU time: wall, CPU (user + system) and peak RSS of it and what it waited for."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "time"
        started = time.perf_counter()
        completed = subprocess.run(
            [GNU_TIME, "--format=%M %U %S", f"--output={out}", *argv],
            capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:4])} exited {completed.returncode}:\n{completed.stderr[-2000:]}")
        rss, user, system = out.read_text().split()[-3:]
    return Sample(seconds, float(user) + float(system), int(rss))


def in_process(function: Callable[[], Any]) -> tuple[Sample, Any]:
    """``function`` in this process: wall, CPU of this process, peak RSS during the call."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds, rss, result = measure(function)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Sample(seconds, cpu, rss), result


def write_config(path: Path, registry_host: str, store: Path, images: Sequence[SetImage]) -> Path:
    config = {
        "store": {"url": str(store)},
        "images": [{"source": f"{registry_host}/{image.repository}", "tags": [image.tag]} for image in images],
        "concurrency": 8,
    }
    path.write_text(yaml.safe_dump(config))
    return path


# ----------------------------------------------------------------------------------------- prefect server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """``prefect server start`` on a free loopback port with its own home; yields the API URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    log = (home.parent / "prefect-server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


# ---------------------------------------------------------------------------------------------------- run


def contenders(registry: LocalRegistry, images: Sequence[SetImage], scratch: Path, api_url: str) -> list[Contender]:
    host = registry.host
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    server_env = dict(os.environ) | {"PREFECT_API_URL": api_url}

    def skopeo(dest: Path) -> Sample:
        total = Sample(0.0, 0.0, 0)
        for image in images:
            argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", *(["--all"] if image.index else [])]
            argv += [f"docker://{host}/{image.repository}:{image.tag}", f"oci:{dest}:{image.repository}:{image.tag}"]
            one = run_timed(argv)
            total = Sample(total.seconds + one.seconds, total.cpu + one.cpu, max(total.rss_kib, one.rss_kib))
        return total

    def core(dest: Path) -> Sample:
        from ocimirror.config import load_config
        from ocimirror.sync import sync

        config = load_config(write_config(dest.with_suffix(".yaml"), host, dest, images))
        sample, result = in_process(lambda: sync(config))
        assert not result.failed, result.summary()
        return sample

    def cli(env: dict[str, str], *flags: str) -> Callable[[Path], Sample]:
        def run(dest: Path) -> Sample:
            config = write_config(dest.with_suffix(".yaml"), host, dest, images)
            before = count_task_runs() if "--prefect" in flags else None
            sample = run_timed([sys.executable, "-m", "ocimirror_cli", "sync", str(config), *flags], env)
            if before is not None:
                sample.task_runs = count_task_runs() - before
            return sample

        return run

    def flow(dest: Path) -> Sample:
        from flows.mirror import mirror_sync

        config = str(write_config(dest.with_suffix(".yaml"), host, dest, images))
        sample, state = in_process(lambda: mirror_sync(config=config, return_state=True))
        assert state.is_completed(), state.message
        sample.task_runs = settled_task_runs(state.state_details.flow_run_id)
        return sample

    return [
        Contender("skopeo copy, one command per image", skopeo),
        Contender("core sync (in-process, no Prefect)", core),
        Contender("CLI sync, no Prefect API", cli(plain_env)),
        Contender("CLI sync --prefect, running server", cli(server_env, "--prefect")),
        Contender("mirror_sync flow, running server", flow),
    ]


def count_task_runs() -> int:
    return settled_task_runs()


def run(scale: float, repeat: int, scratch: Path) -> str:
    images = image_set(scale)
    with LocalRegistry() as registry, prefect_server(scratch / "server-home") as api_url:
        os.environ["PREFECT_API_URL"] = api_url  # this process's flows report to the running server
        size = push_set(registry, images)
        say(f"pushed {len(images)} images, {size / 1e6:.0f} MB of distinct blobs; server {api_url}")
        cold = contenders(registry, images, scratch, api_url)
        warm = [Contender(c.name.replace("skopeo copy", "skopeo copy (again)"), c.run) for c in cold]
        for round_number in range(repeat):
            for cold_one, warm_one in zip(cold, warm, strict=True):
                with fresh_dir(scratch, "dest") as dest:
                    cold_one.samples.append(cold_one.run(dest))
                    warm_one.samples.append(warm_one.run(dest))
                say(f"round {round_number + 1}: {cold_one.name}: {cold_one.samples[-1].seconds:.2f} s cold, "
                    f"{warm_one.samples[-1].seconds:.2f} s again")  # fmt: skip
    return render(cold, warm, size, scale, repeat)


def render(cold: Sequence[Contender], warm: Sequence[Contender], size: int, scale: float, repeat: int) -> str:
    skopeo = statistics.median(s.seconds for s in cold[0].samples)
    lines = [
        f"12 images, scale {scale:g}, {size / 1e6:.0f} MB; median of {repeat} alternating rounds",
        "",
        "| contender | cold wall s | x skopeo | CPU s | peak RSS MiB | task runs | again (no-op) wall s | task runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for first, second in zip(cold, warm, strict=True):
        median = statistics.median(s.seconds for s in first.samples)
        chosen = min(first.samples, key=lambda s: abs(s.seconds - median))
        again = statistics.median(s.seconds for s in second.samples)
        again_runs = min(second.samples, key=lambda s: abs(s.seconds - again)).task_runs
        lines.append(
            f"| {first.name} | {median:.2f} | {median / skopeo:.2f} | {chosen.cpu:.1f} | {chosen.rss_kib / 1024:.0f} "
            f"| {_runs(chosen.task_runs)} | {again:.2f} | {_runs(again_runs)} |"
        )
    return "\n".join(lines)


def _runs(value: int | None) -> str:
    return "-" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every blob size (default 1: ~410 MB)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds; medians are shown")
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.repeat < 1:
        parser.error("--scale must be positive and --repeat at least 1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ocimirror-bench-") as tmp:
        isolate_prefect(Path(tmp) / "prefect-home")
        print(run(args.scale, args.repeat, Path(tmp)))
    say(f"total {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
