"""The ``ocimirror`` Typer app and what every command shares: the console (stderr, never hard-wrapped),
exit codes, the STORE argument and storage options, one-line errors, and opening a store read-only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from ocimirror.errors import OcimirrorError
from ocimirror.text import printable, printable_log_records

if TYPE_CHECKING:
    pass

app = typer.Typer(
    name="ocimirror",
    help="Mirror OCI and Docker images into OCI image layouts on disk, S3 or GCS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",  # help texts are rich markup: a literal bracket is written `\\[`
)
#: Messages go to stderr and are never hard-wrapped: piped output is read by scripts, line by line.
console = Console(stderr=True, soft_wrap=True)
#: Registry messages and store contents reach the terminal through logs too: none may carry escapes.
printable_log_records()


class _ConsoleWarnings(logging.Handler):
    """The core's warnings (a wait on a lock held by another process, retries) on stderr, above any
    progress bars: Prefect's console handler is kept quiet (``mirroring.quiet_prefect``), and these are for the
    person waiting."""

    def emit(self, record: logging.LogRecord) -> None:
        console.print(f"[yellow]warning:[/yellow] {escape(printable(record.getMessage()))}", highlight=False)


logging.getLogger("ocimirror").addHandler(_ConsoleWarnings(logging.WARNING))
T = TypeVar("T")
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document with the results.")]
StoreArgument = Annotated[str, typer.Argument(metavar="STORE", help="A path or fsspec URL (s3://, gs://).")]
StorageOption = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-o", metavar="KEY=VALUE", help="fsspec storage option (repeatable)."),
]


def storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as YAML scalars so ``anon=true`` is a boolean."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--storage-option")
        options[key] = yaml.safe_load(value) if value else ""
    return options


def fail(message: str, code: int) -> typer.Exit:
    """Print ``message`` (which may quote a registry or a store: made ``printable``) as one error line."""
    console.print(f"[red]error:[/red] {escape(printable(message))}", highlight=False)
    return typer.Exit(code)


def open_store_at(store: str, storage_option: list[str] | None):
    from ocimirror.store import open_store

    return open_store(store, storage_options(storage_option))


def inspect_store(store: str, storage_option: list[str] | None, action: Callable[[Any], T]) -> T:
    """Run a read-only core function on STORE; a broken store or a refusing filesystem is exit 1."""
    try:
        return action(open_store_at(store, storage_option))
    except (OcimirrorError, OSError) as error:  # OSError: the filesystem refused (e.g. S3 403)
        raise fail(str(error), EXIT_FAILED) from None
