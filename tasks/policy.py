"""How ocimirror's tasks are declared: Prefect retries of transient failures only, with the core's policy.

A 404, refused credentials, a digest served wrong twice or an invalid manifest fail the same way every
time; retrying them only delays the report. The split is the core's (``ocimirror.errors.is_transient``)
and so are the numbers (``ocimirror.retry``): the in-process engine retries exactly as these tasks do.
Results are never cached or persisted: the store is the idempotency check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from ocimirror.errors import is_transient
from ocimirror.retry import BACKOFF_SECONDS, JITTER, RETRIES

F = TypeVar("F", bound=Callable[..., Any])


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is transient."""
    try:
        state.result()
    except BaseException as error:  # noqa: BLE001 - classify whatever the task raised
        return is_transient(error)
    return False


def mirror_task(name: str, run_name: str | Callable[[], str]) -> Callable[[F], F]:
    """``@task`` with the policy every ocimirror task shares."""
    return task(  # type: ignore[return-value]
        name=name,
        task_run_name=run_name,
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=RETRIES,
        retry_delay_seconds=exponential_backoff(backoff_factor=BACKOFF_SECONDS),
        retry_jitter_factor=JITTER,
        retry_condition_fn=retry_transient,
    )
