"""How ocimirror's tasks retry: transient failures with exponential backoff and jitter, never permanent ones.

A 404, refused credentials, a digest mismatch or an invalid manifest will fail the same way every time;
retrying them only delays the report. The split is the core's (``ocimirror.errors.is_transient``).
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from ocimirror.errors import is_transient

RETRIES = 3
RETRY_DELAYS = exponential_backoff(backoff_factor=1)
RETRY_JITTER = 0.5


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is transient."""
    try:
        state.result()
    except BaseException as error:  # noqa: BLE001 - classify whatever the task raised
        return is_transient(error)
    return False


#: Keyword arguments for ``@task`` shared by every task that talks to a registry or a store.
RETRY_POLICY: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_transient,
}
