"""The architecture's rules that a reviewer would otherwise have to check by hand."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # The core is a library: no orchestration, no user interface, no demo or test tooling.
        ("ocimirror", {"prefect", "tasks", "flows", "ocimirror_cli", "ocimirror_demo", "tests"}),
        ("tasks", {"flows", "ocimirror_cli"}),
        ("flows", {"ocimirror_cli"}),  # the CLI runs flows; a flow never reaches back into the CLI
    ],
)
def test_arrows_point_down(package: str, forbidden: set[str]) -> None:
    """Imports go core <- tasks <- flows <- CLI, never upwards (imports inside functions count too)."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & forbidden)
        for path in (ROOT / package).rglob("*.py")
        if _imports(path) & forbidden
    }
    assert offenders == {}


def test_importing_the_whole_core_loads_no_prefect() -> None:
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "ocimirror").rglob("*.py")
    )
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('prefect' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert loaded.stdout.strip() == "False"


def test_retry_condition_retries_only_transient_failures() -> None:
    from prefect.states import Failed

    from ocimirror.errors import DigestMismatch, NotFound, TransientError, Unauthorized
    from tasks.policy import retry_transient

    assert retry_transient(None, None, Failed(data=TransientError("503", retry_after=1)))
    assert retry_transient(None, None, Failed(data=ConnectionResetError()))
    for permanent in (
        NotFound("gone"),
        Unauthorized("no"),
        DigestMismatch("bad"),
        PermissionError("Access Denied"),  # what s3fs and gcsfs raise for a 403
        FileNotFoundError("no-such-bucket"),  # and for a missing bucket
    ):
        assert not retry_transient(None, None, Failed(data=permanent))


def test_prefect_yaml_deployments_point_at_real_flows() -> None:
    import importlib
    import inspect

    from prefect.flows import Flow

    document = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    names = {d["name"] for d in document["deployments"]}
    assert {"nightly", "manual", "fetch-image"} <= names
    for deployment in document["deployments"]:
        module_path, _, attribute = deployment["entrypoint"].partition(":")
        module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, attribute)
        assert isinstance(flow, Flow)
        assert set(deployment.get("parameters", {})) <= set(inspect.signature(flow.fn).parameters)
        config = deployment.get("parameters", {}).get("config")
        if config:
            assert (ROOT / config).exists()
    nightly = next(d for d in document["deployments"] if d["name"] == "nightly")
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


def test_schedule_script_starts() -> None:
    """``deployments/schedule.py`` imports the flows it schedules and parses its arguments."""
    script = ROOT / "deployments" / "schedule.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--cron" in result.stdout
