"""The benchmark's measuring tools measure what they claim (no timings asserted: those are numbers to read).

Not collected by the main suite (``testpaths = tests``); run with ``python -m pytest bench``.
"""

from __future__ import annotations

import sys

import pytest

from bench.compare_skopeo import Row, measure, median_runs, render, run_process

MIB = 1024 * 1024


def _allocate(size: int) -> int:
    """Touch ``size`` bytes so they are resident, then let them go."""
    block = bytearray(size)
    block[::4096] = b"\x01" * len(block[::4096])
    return len(block)


def test_measure_sees_a_peak_inside_the_call_and_forgets_it_after() -> None:
    _, baseline, _ = measure(lambda: None)
    _, peak, allocated = measure(lambda: _allocate(256 * MIB))
    _, after, _ = measure(lambda: None)

    assert allocated == 256 * MIB
    assert peak - baseline >= 200 * 1024  # KiB
    assert after - baseline < 64 * 1024  # the earlier peak is not carried into the next window


def test_run_process_reports_the_childs_own_peak() -> None:
    code = "b = bytearray(300 * 1024 * 1024); b[::4096] = b'\\x01' * len(b[::4096])"
    _, big = run_process([sys.executable, "-c", code])
    _, small = run_process([sys.executable, "-c", "pass"])

    assert big >= 300 * 1024
    assert small < 100 * 1024  # not the earlier child's peak, as RUSAGE_CHILDREN would report


def test_run_process_does_not_charge_the_parents_memory_to_the_child() -> None:
    held = bytearray(300 * MIB)  # a child forked (or vforked) from here starts out sharing all of this
    held[::4096] = b"\x01" * len(held[::4096])

    _, peak = run_process([sys.executable, "-c", "pass"])

    assert peak < 100 * 1024
    del held


def test_run_process_failure_names_the_command_and_its_stderr() -> None:
    with pytest.raises(RuntimeError, match=r"exited 3:\n.*no such image"):
        run_process([sys.executable, "-c", "import sys; sys.stderr.write('no such image'); sys.exit(3)"])


def test_table_shows_rates_only_for_copies() -> None:
    copied = Row("big", "skopeo copy", 2.0, 51200, size=100_000_000)
    no_op = Row("big", "mirror_sync, no-op", 0.5, 204800, task_runs=0, note="up-to-date")

    header, rule, *lines = render([copied, no_op]).splitlines()

    assert header.count("|") == rule.count("|") == lines[0].count("|") == 8
    assert lines[0] == "| big | skopeo copy | 2.00 | 50 | 50 | - |  |"
    assert lines[1] == "| big | mirror_sync, no-op | 0.50 | - | 200 | 0 | up-to-date |"


def test_median_keeps_whole_runs_position_by_position() -> None:
    seconds = iter([(3.0, 9.0), (1.0, 7.0), (2.0, 8.0)])

    def bench() -> list[Row]:
        cold, warm = next(seconds)
        return [Row("w", "cold", cold, int(cold), note="fetched"), Row("w", "warm", warm, int(warm))]

    cold, warm = median_runs(3, bench)

    assert (cold.contender, cold.seconds, cold.peak_rss_kib) == ("cold", 2.0, 2)
    assert (warm.contender, warm.seconds, warm.peak_rss_kib) == ("warm", 8.0, 8)
    assert cold.note == "fetched; median of 3" and warm.note == "median of 3"
