"""``store_maintenance``: verify a store, optionally repair it, and collect its garbage, as a Prefect flow.

Scheduled weekly by ``deployments/prefect.yaml``. The whole run holds the store's concurrency slot (a
Prefect global concurrency limit of 1 keyed by the store URL, ``tasks.maintenance.store_slot``), so it never
overlaps another maintenance run or a sync that takes the same slot, on any worker; the leases inside the
store (``ocimirror.store.lease``) keep gc safe even against writers that bypass Prefect. The result is a
``store-maintenance`` table artifact; the run fails if anything is left damaged or gc could not run.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from ocimirror.config import RegistrySettings, StoreSettings
from ocimirror.errors import ConfigError, OcimirrorError
from ocimirror.gc import GcReport, parse_duration
from ocimirror.repair import RepairReport
from ocimirror.verify import VerifyReport
from tasks.maintenance import collect_garbage_task, repair_store_task, store_slot, verify_store_task

ARTIFACT_KEY = "store-maintenance"


class MaintenanceResult(BaseModel):
    """What one maintenance run found and did."""

    store: str
    verify: VerifyReport | None = None
    repair: RepairReport | None = None
    gc: GcReport | None = None
    errors: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        healthy = self.repair.ok if self.repair is not None else self.verify is not None and self.verify.ok
        return healthy and self.gc is not None and not self.errors


class MaintenanceFailed(Exception):
    """The run ended with damage left or a step that could not run; ``result`` has the details."""

    def __init__(self, result: MaintenanceResult) -> None:
        problems = result.errors or ["the store still has faults after maintenance"]
        super().__init__(f"maintenance of {result.store} failed: {'; '.join(problems)}")
        self.result = result


def _store_settings(store: StoreSettings | str | dict[str, object]) -> StoreSettings:
    if isinstance(store, StoreSettings):
        return store
    if isinstance(store, str):
        return StoreSettings(url=store)
    return StoreSettings.model_validate(store)


@flow(name="store-maintenance", validate_parameters=False)
def store_maintenance(
    store: StoreSettings | str | dict[str, object],
    grace: str = "1h",
    repair: bool = False,
    dry_run: bool = False,
    registries: dict[str, RegistrySettings] | None = None,
    slot_timeout_seconds: float | None = None,
) -> MaintenanceResult:
    """Verify every blob and image of ``store``; with ``repair``, fetch damaged content again from the
    images' registries; then delete what no image reaches (older than ``grace``; only listed with
    ``dry_run``). Waits for the store's slot (at most ``slot_timeout_seconds``) so no sync runs meanwhile."""
    logger = get_run_logger()
    settings = _store_settings(store)
    try:
        parse_duration(grace)
    except ValueError as error:
        raise ConfigError(f"grace: {error}") from None
    result = MaintenanceResult(store=settings.url)
    with store_slot(settings, slot_timeout_seconds):
        try:
            result.verify = verify_store_task(settings)
            logger.info("verify: %s", result.verify.summary())
            if repair and not result.verify.ok:
                result.repair = repair_store_task(settings, registries or {}, result.verify)
                logger.info(
                    "repair: %d repaired, %d left", len(result.repair.repaired), len(result.repair.unrepairable)
                )
            result.gc = collect_garbage_task(settings, grace, dry_run)
            logger.info("gc: %s", result.gc.summary())
        except (OcimirrorError, OSError) as error:
            result.errors.append(f"{type(error).__name__}: {error}")
    _publish(result)
    if not result.ok:
        raise MaintenanceFailed(result)
    return result


def _publish(result: MaintenanceResult) -> None:
    """One table row per step and a markdown list of what is left damaged (errors before digests)."""
    rows: list[dict[str, str]] = []
    if result.verify is not None:
        rows.append(
            {"step": "verify", "outcome": "ok" if result.verify.ok else "faults", "details": result.verify.summary()}
        )
    if result.repair is not None:
        repair = result.repair
        rows.append(
            {
                "step": "repair",
                "outcome": "ok" if repair.ok else "damage left",
                "details": f"{len(repair.repaired)} repaired, {len(repair.unrepairable)} unrepairable",
            }
        )
    if result.gc is not None:
        rows.append(
            {"step": "gc", "outcome": "dry run" if result.gc.dry_run else "done", "details": result.gc.summary()}
        )
    rows += [{"step": "error", "outcome": "failed", "details": error} for error in result.errors]
    create_table_artifact(key=ARTIFACT_KEY, table=rows, description=f"Maintenance of {result.store}")
    left = result.repair.unrepairable if result.repair is not None else []
    if left:
        lines = [f"- {problem}" for problem in left]
        create_markdown_artifact(
            key=f"{ARTIFACT_KEY}-damage", markdown="## Content no source could supply\n\n" + "\n".join(lines)
        )
