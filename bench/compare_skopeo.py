"""ocimirror next to skopeo: the same images, from the same loopback registry, into OCI layouts on local disk.

Run from the repository root::

    python bench/compare_skopeo.py            # default workloads, a few minutes on 2 cores
    python bench/compare_skopeo.py --quick    # small workloads, for a smoke run

The script starts Debian's ``docker-registry`` on 127.0.0.1 (``LocalRegistry``), pushes three workloads
built in memory (a few big layers; many small layers; a two-platform index with attestations) and copies
each one with every contender into a fresh directory. It prints one Markdown table: wall seconds, MB/s
(decimal, of the blobs copied), peak RSS and Prefect task runs. Nothing leaves loopback: Prefect runs on an
ephemeral server with its own home directory and analytics off. Every temporary directory, the registry
and the Prefect server are gone when the script exits.

The phases run in an order that keeps their costs apart: skopeo and the core pull first (no Prefect
imported), then the flows in this process (the first flow pays for the server start and a new database,
reported on its own row), then the CLI in subprocesses: first against that running server
(``PREFECT_API_URL``), then, once it is stopped, with no Prefect API: the in-process engine a user gets by
default. Numbers are single runs: compare ratios, not percent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as ``python bench/compare_skopeo.py`` without installing
    sys.path.insert(0, str(REPO_ROOT))

from ocimirror_demo.images import (  # noqa: E402 - after the path set-up above
    DEFAULT_PLATFORMS,
    Image,
    build_index,
    build_manifest,
    push_image,
    random_layer,
)
from ocimirror_demo.registry import LocalRegistry  # noqa: E402

T = TypeVar("T")
MIB = 1024 * 1024
KIB = 1024
#: GNU time (Debian package ``time``): measures a command's peak RSS without this process's memory.
GNU_TIME = "/usr/bin/time"
#: Fetches in flight for every ocimirror contender (skopeo's own default is 6 parallel layer copies).
CONCURRENCY = 8
#: How long to wait for the Prefect server to record task runs it learns of through events.
TASK_RUN_SETTLE_SECONDS = 30.0


# ------------------------------------------------------------------------------------------------ workloads


@dataclass(frozen=True)
class Workload:
    """An image to push and copy: ``build`` makes it in memory; ``index`` says skopeo needs ``--all``."""

    name: str
    repository: str
    build: Callable[[], Image]
    index: bool = False


@dataclass(frozen=True)
class PushedImage:
    """What the benchmark keeps of a pushed workload: where it is and what a full copy must move.

    The blob bytes themselves are dropped after the push so they do not inflate in-process peak RSS.
    """

    workload: Workload
    reference: str
    digest: str
    blobs: int
    size: int


def big_layers(count: int, size: int) -> Callable[[], Image]:
    """One linux/amd64 manifest over ``count`` incompressible layers of ``size`` bytes: throughput."""
    return lambda: build_manifest(random_layer(size, f"big-{n}") for n in range(count))


def small_layers(count: int, size: int) -> Callable[[], Image]:
    """One manifest over ``count`` layers of ``size`` bytes: per-blob overhead (requests, tasks, renames)."""
    return lambda: build_manifest(random_layer(size, f"small-{n}") for n in range(count))


def multiarch(layers: int, size: int) -> Callable[[], Image]:
    """An OCI index of linux/amd64 and linux/arm64/v8, ``layers`` layers each, plus BuildKit attestations:
    the tree walk across three levels (index -> manifests -> configs and layers)."""

    def build() -> Image:
        manifests = [
            build_manifest((random_layer(size, f"{platform}-{n}") for n in range(layers)), platform)
            for platform in DEFAULT_PLATFORMS
        ]
        return build_index(manifests, attestations=True)

    return build


def workloads(quick: bool) -> list[Workload]:
    """The three workloads of the brief; ``quick`` shrinks each to a few seconds of work."""
    if quick:
        return [
            Workload("big layers (3 x 8 MiB)", "bench/big", big_layers(3, 8 * MIB)),
            Workload("small layers (40 x 16 KiB)", "bench/small", small_layers(40, 16 * KIB)),
            Workload("index, 2 platforms + attestations (2 x 1 x 1 MiB)", "bench/multi", multiarch(1, MIB), True),
        ]
    return [
        Workload("big layers (3 x 64 MiB)", "bench/big", big_layers(3, 64 * MIB)),
        Workload("small layers (200 x 16 KiB)", "bench/small", small_layers(200, 16 * KIB)),
        Workload("index, 2 platforms + attestations (2 x 2 x 8 MiB)", "bench/multi", multiarch(2, 8 * MIB), True),
    ]


def push(registry: LocalRegistry, workload: Workload, tag: str = "v1") -> PushedImage:
    """Build ``workload``, push it as ``REPOSITORY:tag`` and keep only its coordinates and totals."""
    image = workload.build()
    push_image(registry.url, workload.repository, tag, image)
    descriptors = image.all_descriptors()
    return PushedImage(
        workload=workload,
        reference=f"{registry.host}/{workload.repository}:{tag}",
        digest=image.digest,
        blobs=len(descriptors),
        size=sum(d.size for d in descriptors),
    )


# ---------------------------------------------------------------------------------------------- measuring


@dataclass
class Row:
    """One line of the result table. ``size`` is the bytes copied (None: nothing needed copying)."""

    workload: str
    contender: str
    seconds: float
    peak_rss_kib: int | None
    size: int | None = None
    task_runs: int | None = None
    note: str = ""

    @property
    def mb_per_second(self) -> float | None:
        """Decimal megabytes copied per wall second, as registries and ``human_size`` count them."""
        return self.size / 1e6 / self.seconds if self.size and self.seconds > 0 else None


def _peak_rss_kib() -> int:
    """This process's peak resident set (``VmHWM``) since the last :func:`_reset_peak_rss`."""
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError("/proc/self/status has no VmHWM line: peak RSS needs Linux")
    return int(match.group(1))


def _reset_peak_rss() -> None:
    """Start a new peak-RSS window: Linux resets ``VmHWM`` to the current RSS on ``5`` in clear_refs."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(function: Callable[[], T]) -> tuple[float, int, T]:
    """Run ``function`` in this process: wall seconds, peak RSS (KiB) during the call, its result."""
    _reset_peak_rss()
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, _peak_rss_kib(), result


def run_process(
    argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, int]:
    """Run a command to completion: wall seconds and peak RSS (KiB) of it or any descendant it waited for.

    The command runs under GNU ``time``: a child's ``ru_maxrss`` also counts the memory it had before
    ``exec``, which for a child of this (large) Python process is this process's resident set, so
    measuring a child of ``time`` (about a MiB) is the honest way. Output goes to temporary files
    (no pipe to drain); a failure raises with the end of stderr.
    """
    if not Path(GNU_TIME).exists():
        raise RuntimeError(f"{GNU_TIME} not found: install the Debian 'time' package")
    with tempfile.TemporaryDirectory() as tmp:
        rss_file, stdout_file, stderr_file = (Path(tmp) / name for name in ("rss", "stdout", "stderr"))
        with stdout_file.open("wb") as stdout, stderr_file.open("wb") as stderr:
            started = time.perf_counter()
            completed = subprocess.run(
                [GNU_TIME, "--format=%M", f"--output={rss_file}", *argv],
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env, cwd=cwd, check=False,
            )  # fmt: skip
            seconds = time.perf_counter() - started
        if completed.returncode != 0:
            tail = stderr_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(argv)} exited {completed.returncode}:\n{tail}")
        return seconds, int(rss_file.read_text().split()[-1])


@contextmanager
def fresh_dir(parent: Path, name: str) -> Iterator[Path]:
    """A directory that does not exist yet under ``parent`` (a cold copy target), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    path.rmdir()  # skopeo and the store create it themselves, as for a new mirror
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _expect(what: str, actual: str, expected: str) -> None:
    """A benchmark of a copy that went wrong is meaningless: stop with what differed."""
    if actual != expected:
        raise RuntimeError(f"{what}: got {actual}, expected {expected}")


def median_runs(repeat: int, bench: Callable[[], list[Row]]) -> list[Row]:
    """Run ``bench`` ``repeat`` times; of each row position keep the run with the median wall time.

    A whole run is kept (not a median per column) so its RSS, task runs and note stay consistent. One
    sequence is repeated as a unit, since its rows may depend on each other (cold, then warm).
    """
    runs = [bench() for _ in range(repeat)]
    kept = []
    for position in zip(*runs, strict=True):
        median = sorted(position, key=lambda row: row.seconds)[(len(position) - 1) // 2]
        if repeat > 1:
            median.note = f"{median.note}; median of {repeat}" if median.note else f"median of {repeat}"
        kept.append(median)
    return kept


# -------------------------------------------------------------------------------------------- contenders


def bench_skopeo(image: PushedImage, scratch: Path) -> Row:
    """``skopeo copy`` into a new OCI layout (``--all`` for an index, else skopeo picks one platform)."""
    tag = image.reference.rpartition(":")[2]
    with fresh_dir(scratch, "skopeo") as dest:
        argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
        argv += ["--all"] if image.workload.index else []
        argv += [f"docker://{image.reference}", f"oci:{dest}:{tag}"]
        seconds, rss = run_process(argv)
        (entry,) = json.loads((dest / "index.json").read_text())["manifests"]
        _expect(f"skopeo copy of {image.reference}", entry["digest"], image.digest)
    label = "skopeo copy --all" if image.workload.index else "skopeo copy"
    return Row(image.workload.name, label, seconds, rss, image.size)


def bench_core_pull(image: PushedImage, scratch: Path) -> Row:
    """``ocimirror.pull.pull`` in this process, without Prefect: the engine's own cost (resolve included)."""
    from ocimirror.pull import pull, recorded_name
    from ocimirror.remotes import parse_reference
    from ocimirror.remotes.registry import Registry
    from ocimirror.store import open_store

    reference = parse_reference(image.reference)

    def run() -> str:
        with Registry() as registry:
            root = registry.resolve(reference)
            return pull(registry.fetcher(reference), store, root, recorded_name(reference), limit=CONCURRENCY).digest

    with fresh_dir(scratch, "core") as dest:
        store = open_store(str(dest))
        seconds, rss, digest = measure(run)
        _expect(f"core pull of {image.reference}", digest, image.digest)
    return Row(image.workload.name, f"ocimirror core pull (limit={CONCURRENCY})", seconds, rss, image.size)


def bench_prefect_start() -> list[Row]:
    """Import of the flows, then empty flows: the first starts the ephemeral server and creates its
    database; the next is what every flow run costs without any task (create run, states, end of run)."""
    seconds, rss, _ = measure(lambda: __import__("flows.mirror"))
    rows = [Row("-", "import prefect + flows", seconds, rss)]
    from prefect import flow
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    @flow(name="bench-empty")
    def empty() -> None:
        """Nothing: the cost of a flow run itself."""

    for label in ("first flow (server start, new DB)", "empty flow (per-run overhead)"):
        seconds, rss, _ = measure(lambda: empty(return_state=True))
        rows.append(Row("-", label, seconds, rss))
    # Prefect joins its flow-heartbeat thread at the end of every run, and that thread sleeps in 1 s steps:
    # this row shows how much of the per-run overhead that is.
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        seconds, rss, _ = measure(lambda: empty(return_state=True))
    rows.append(Row("-", "empty flow, heartbeats off", seconds, rss))
    return rows


def bench_flows(image: PushedImage, scratch: Path) -> list[Row]:
    """``fetch_image`` cold then warm into one store, then ``mirror_sync`` of the unchanged image."""
    from flows.fetch import fetch_image
    from flows.mirror import mirror_sync

    rows = []
    with fresh_dir(scratch, "flow") as dest:
        for label in ("fetch_image flow, cold", "fetch_image flow, warm"):
            seconds, rss, state = measure(
                lambda: fetch_image(
                    reference=image.reference, store=str(dest), concurrency=CONCURRENCY, return_state=True
                )
            )
            result = state.result()
            _expect(f"{label} of {image.reference}", result.digest, image.digest)
            note = f"{result.blobs_fetched} fetched, {result.blobs_present} present"
            copied = result.bytes_fetched or None
            runs = settled_task_runs(state.state_details.flow_run_id)
            rows.append(Row(image.workload.name, label, seconds, rss, copied, runs, note))
        repository, _, tag = image.reference.rpartition(":")
        config = {"store": {"url": str(dest)}, "images": [{"source": repository, "tags": [tag]}]}
        seconds, rss, state = measure(lambda: mirror_sync(config=config, return_state=True))
        (outcome,) = state.result().images
        _expect(f"mirror_sync of unchanged {image.reference}", outcome.status, "up-to-date")
        runs = settled_task_runs(state.state_details.flow_run_id)
        rows.append(Row(image.workload.name, "mirror_sync, no-op", seconds, rss, None, runs, outcome.status))
    return rows


def settled_task_runs(flow_run_id: Any = None) -> int:
    """The task runs the server has recorded for ``flow_run_id`` (all, without one), once that number
    stops changing.

    The server learns of task runs from events, shortly after they ran. Waiting here also lets the next
    measurement start (or the server stop) once it is no longer busy with this run's events.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])) if flow_run_id else None

    def count(client: Any) -> int:
        total, offset, page = 0, 0, 200  # the API's largest page
        while runs := client.read_task_runs(flow_run_filter=only_this_run, limit=page, offset=offset):
            total += len(runs)
            offset += page
        return total

    deadline = time.monotonic() + TASK_RUN_SETTLE_SECONDS
    with get_client(sync_client=True) as client:
        previous, current = -1, count(client)
        while current != previous and time.monotonic() < deadline:
            time.sleep(1.0)
            previous, current = current, count(client)
    return current


def ephemeral_server() -> Any:
    """The ephemeral Prefect server of this process (``SubprocessASGIServer`` keeps one per process): the
    first flow started it; its ``api_url`` lets the CLI runs use it; ``stop()`` ends it before Prefect's
    own exit hook would, so the last CLI runs have the machine and the database to themselves."""
    from prefect.server.api.server import SubprocessASGIServer

    return SubprocessASGIServer()


def bench_cli(image: PushedImage, scratch: Path, api_url: str | None = None) -> Row:
    """``python -m ocimirror_cli pull REF --to DIR`` in a subprocess: with ``api_url``, the flow on that running
    server (interpreter, Prefect's import, the flow run); without, the in-process engine (no Prefect)."""
    env = dict(os.environ) | ({"PREFECT_API_URL": api_url} if api_url else {})
    with fresh_dir(scratch, "cli") as dest:
        argv = [sys.executable, "-m", "ocimirror_cli", "pull", image.reference, "--to", str(dest), "--json"]
        seconds, rss = run_process(argv, env=env, cwd=REPO_ROOT)
    label = "CLI pull, cold, running server" if api_url else "CLI pull, cold, no Prefect API (in-process)"
    return Row(image.workload.name, label, seconds, rss, image.size)


# ----------------------------------------------------------------------------------------------- report


def render(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (what bench/README.md shows)."""
    lines = [
        "| workload | contender | wall s | MB/s | peak RSS MiB | task runs | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        rate = f"{row.mb_per_second:.0f}" if row.mb_per_second is not None else "-"
        rss = f"{row.peak_rss_kib / 1024:.0f}" if row.peak_rss_kib is not None else "-"
        runs = str(row.task_runs) if row.task_runs is not None else "-"
        lines.append(f"| {row.workload} | {row.contender} | {row.seconds:.2f} | {rate} | {rss} | {runs} | {row.note} |")
    return "\n".join(lines)


def isolate_prefect(home: Path) -> None:
    """Point Prefect (this process and the CLI subprocesses) at an ephemeral server in ``home``.

    Must run before Prefect is imported: its settings are read then. A configured ``PREFECT_API_URL`` or
    profile is ignored so the numbers are for the ephemeral server; analytics are off so nothing leaves
    loopback.
    """
    for name in [name for name in os.environ if name.startswith("PREFECT_")]:
        del os.environ[name]
    os.environ |= {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Creating the database takes ~20 s on a busy 2-core machine: the default timeout (20 s) is too short.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


def run(selected: Sequence[Workload], scratch: Path, repeat: int) -> list[Row]:
    """Push ``selected`` to a fresh loopback registry and measure every contender on each, phase by phase.

    Copies and flows are repeated ``repeat`` times (median kept); CLI runs once each, since their ~10 s of
    start-up would dominate the run time and they vary less in relative terms.
    """
    rows: list[Row] = []
    with LocalRegistry() as registry:
        say(f"registry {registry.url}; load average {os.getloadavg()[0]:.2f}")
        images = [push(registry, workload) for workload in selected]
        for image in images:
            say(f"pushed {image.reference}: {image.blobs} blobs, {image.size / 1e6:.1f} MB")
        for image in images:
            rows += median_runs(
                repeat, lambda image=image: [bench_skopeo(image, scratch), bench_core_pull(image, scratch)]
            )
        say("skopeo and core pull done; starting Prefect")
        try:
            rows += bench_prefect_start()
            for image in images:
                rows += median_runs(repeat, lambda image=image: bench_flows(image, scratch))
            say("flows done; CLI runs")
            api_url = ephemeral_server().api_url
            rows += [bench_cli(image, scratch, api_url) for image in images]
            settled_task_runs()  # stopping the server while it records the CLI's runs logs tracebacks
        finally:
            ephemeral_server().stop()
        rows += [bench_cli(image, scratch) for image in images]
    order = {name: n for n, name in enumerate(["-", *(workload.name for workload in selected)])}
    return sorted(rows, key=lambda row: order[row.workload])  # stable: contenders keep their phase order


def say(message: str) -> None:
    """Progress on stderr, so stdout is just the table."""
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small workloads, one run each (a smoke run)")
    parser.add_argument("--repeat", type=int, help="runs per copy and flow measurement; the median is shown")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if "prefect" in sys.modules:
        raise RuntimeError("Prefect was imported before its settings could be isolated")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ocimirror-bench-") as tmp:
        isolate_prefect(Path(tmp) / "prefect-home")
        rows = run(workloads(args.quick), Path(tmp), args.repeat or (1 if args.quick else 3))
    print(render(rows))
    say(f"total {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
