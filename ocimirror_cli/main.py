"""``ocimirror``: the command line of the README's "Command line" section.

``pull`` and ``sync`` mirror images (``mirroring``: in this process, or as Prefect flows); ``ls``,
``verify``, ``rm``, ``gc`` and ``schema`` read and maintain a store (``store_commands``); ``serve`` makes
a store a registry (``serving``); ``demo`` tries it all on a local registry (``demo``). Exit codes: 0 when
everything asked for is complete and verified, 1 when something failed, 2 for bad input, 130 when
interrupted.
"""

from __future__ import annotations

import sys

from . import demo, mirroring, serving, store_commands  # noqa: F401 - importing them registers their commands
from .app import app

__all__ = ["app", "main"]

#: The order of commands in ``ocimirror --help``: the daily ones first.
HELP_ORDER = ["pull", "sync", "ls", "verify", "rm", "gc", "serve", "schema", "demo"]
app.registered_commands.sort(key=lambda command: HELP_ORDER.index(command.name or command.callback.__name__))


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="ocimirror")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
