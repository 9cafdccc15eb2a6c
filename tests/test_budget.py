"""The per-registry request budget on the path without Prefect: a registry's ``max_parallel_fetches`` holds
at the registry side (a counting proxy in front of it), and ``max_requests_per_second`` spaces requests.
The fleet-wide budget (Prefect limits, several workers) is tested in test_scaleout.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ocimirror.config import parse_config
from ocimirror.remotes.budget import LocalBudget
from ocimirror.store import open_store
from ocimirror.sync import sync
from ocimirror.verify import verify_store
from tests.fixtures.faultproxy import Fault, FaultProxy

IMAGES = ["test/multiarch:v1", "test/single:v1", "test/shared-a:v1", "test/shared-b:v1", "test/many:v1"]


def _config(store: Path, proxy: FaultProxy, **limits: Any) -> dict[str, Any]:
    images = [{"source": f"{proxy.host}/{name.split(':')[0]}", "tags": ["v1"]} for name in IMAGES]
    registries = {proxy.host: limits} if limits else {}
    return {"store": {"url": str(store)}, "images": images, "concurrency": 8, "registries": registries}


def _slow_link(proxy: FaultProxy) -> None:
    """Every answer takes a while, so transfers overlap whenever the client lets them."""
    proxy.add(Fault("throttle", path_contains="/v2/", times=None, rate=64 * 1024))


def test_parallel_fetches_never_exceed_the_budget(fault_proxy: FaultProxy, tmp_path: Path) -> None:
    _slow_link(fault_proxy)
    result = sync(parse_config(_config(tmp_path / "limited", fault_proxy, max_parallel_fetches=2)))
    assert not result.failed, [image.error for image in result.failed]
    assert fault_proxy.peak_in_flight == 2
    assert verify_store(open_store(str(tmp_path / "limited"))).ok


def test_without_a_budget_the_same_sync_runs_wider(fault_proxy: FaultProxy, tmp_path: Path) -> None:
    """The counter can tell: the same sync unlimited has more than two transfers at the registry at once."""
    _slow_link(fault_proxy)
    result = sync(parse_config(_config(tmp_path / "free", fault_proxy)))
    assert not result.failed, [image.error for image in result.failed]
    assert fault_proxy.peak_in_flight > 2


def test_requests_per_second_are_spaced_by_a_token_bucket() -> None:
    """Five a second with bursts of five: the sixth request right away waits 0.2 s, the next 0.4 s; after a
    quiet second the bucket is full again."""
    now = [0.0]
    waits: list[float] = []
    budget = LocalBudget(clock=lambda: now[0], sleep=waits.append)
    for _ in range(7):
        budget.request("registry.example", 5.0)
    assert [round(wait, 3) for wait in waits] == [0.2, 0.4]
    now[0] += 10.0
    waits.clear()
    for _ in range(5):
        budget.request("registry.example", 5.0)
    assert waits == []


def test_slow_hosts_are_budgeted_apart() -> None:
    """One host's budget spent does not hold back another's requests."""
    waits: list[float] = []
    budget = LocalBudget(clock=lambda: 0.0, sleep=waits.append)
    budget.request("a.example", 1.0)
    budget.request("b.example", 1.0)
    assert waits == []
    budget.request("a.example", 1.0)
    assert waits == [1.0]


def test_every_request_to_a_budgeted_host_draws_from_the_budget(fault_proxy: FaultProxy) -> None:
    """The registry client asks the budget before each request to a host with a rate (half a request a
    second, a frozen clock: every request past the first waits), and not at all for hosts without one."""
    from ocimirror.remotes import Registry, RegistryConfig, parse_reference

    waits: list[float] = []
    budget = LocalBudget(clock=lambda: 0.0, sleep=waits.append)
    configs = {fault_proxy.host: RegistryConfig(max_requests_per_second=0.5)}
    with Registry(configs, budget=budget) as registry:
        for name in IMAGES[:3]:
            registry.resolve(parse_reference(f"{fault_proxy.host}/{name}"))
    requests = len(fault_proxy.recorded(server="proxy"))
    assert requests >= 3
    assert len(waits) == requests - 1  # the first request spends the one token the bucket starts with
    assert waits == [2.0 * n for n in range(1, requests)]

    waits.clear()
    with Registry(budget=budget) as unbudgeted:
        unbudgeted.resolve(parse_reference(f"{fault_proxy.host}/{IMAGES[0]}"))
    assert waits == []
