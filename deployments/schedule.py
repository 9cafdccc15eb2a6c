"""Run ocimirror's deployments on a schedule from one process, for users without a work pool or worker.

    python deployments/schedule.py [CONFIG.yaml] [--cron "0 3 * * *"]

Registers a scheduled ``mirror-sync/nightly`` (overlapping runs cancelled), an on-demand
``mirror-sync/manual`` and ``fetch-image/fetch-image``, then runs whatever is scheduled or triggered from
the UI until interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import serve  # Prefect's word: run deployments in this process (not ``ocimirror serve``)
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from flows.fetch import fetch_image
from flows.mirror import mirror_sync
from ocimirror.config import load_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "dockerhub-base.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="mirror config for the schedule")
    parser.add_argument("--cron", default="0 3 * * *", help="schedule of the nightly sync (UTC)")
    args = parser.parse_args(argv)
    load_config(args.config)  # refuse a schedule that would fail on every run
    config = str(Path(args.config).resolve())
    serve(
        mirror_sync.to_deployment(
            name="nightly",
            cron=args.cron,
            parameters={"config": config},
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        ),
        mirror_sync.to_deployment(name="manual", parameters={"config": config, "dry_run": True}),
        fetch_image.to_deployment(name="fetch-image"),
    )


if __name__ == "__main__":
    main()
