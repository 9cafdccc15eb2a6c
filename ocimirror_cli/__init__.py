"""The ``ocimirror`` command line: typer commands over the flows (pull, sync) and the core (ls, verify, serve)."""
