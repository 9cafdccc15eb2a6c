"""Shared fixtures live in tests/fixtures/ as plugins, one module per kind of real server."""

pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.hostile_registry",
    "tests.fixtures.objectstores",
    "tests.fixtures.prefect",
    "tests.fixtures.referrers",
    "tests.fixtures.scripted_registry",
    "tests.fixtures.served",
]
