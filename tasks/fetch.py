"""The task the flows run for the engine (``ocimirror.mirror``): fetch a unit of descriptors (``ocimirror.work``).

A unit is one manifest, index or large layer (named like ``layer sha256:1a2b3c4d 30.0 MB``) or a batch of
small blobs (``12 blobs 1.4 MB``); a failure inside a batch names the descriptor that failed.
"""

from __future__ import annotations

from prefect.runtime import task_run

from ocimirror.work import Fetched, FetchUnit, fetch_descriptors

from .clients import Target
from .policy import mirror_task


def _unit_name() -> str:
    unit = task_run.parameters["unit"]
    return unit.describe() if isinstance(unit, FetchUnit) else "fetch"


@mirror_task(name="fetch", run_name=_unit_name)
def fetch_unit(unit: FetchUnit, target: Target) -> list[Fetched]:
    """Copy ``unit``'s descriptors from its source registry into the store (verified, resumed if
    interrupted) and return what each brought, children of documents included."""
    fetcher = target.registry().fetcher(unit.source)
    return fetch_descriptors(fetcher, target.open_store(), unit.descriptors, unit.replace)
