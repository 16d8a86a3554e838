"""Job entry points (jobs/<layer>.py) map their parameters onto a command line the kappalake CLI accepts.

The bundle and the Kubernetes manifests are checked in tests/test_deploy_bundle.py and
tests/test_deploy_k8s.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from kappalake.cli.app import app
from kappalake.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("bronze", "silver", "gold")


def _load_job(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bronze_job_maps_parameters_to_the_cli() -> None:
    job = _load_job("bronze")
    assert job.build_argv(["--pipeline", "payments", "--target", "databricks", "--conf", "/c"]) == [
        "kappalake", "--target", "databricks", "--conf", "/c", "run", "payments", "--layer", "bronze"]
    assert job.build_argv(["--pipeline", "iot", "--available-now"])[-1] == "--available-now"


@pytest.mark.parametrize("layer", LAYERS)
def test_each_job_runs_its_own_layer(layer: str) -> None:
    job = _load_job(layer)
    assert job.LAYER == layer
    assert job.build_argv(["--pipeline", "iot", "--trigger", "10 seconds"]) == [
        "kappalake", "run", "iot", "--layer", layer, "--trigger", "10 seconds"]
    with pytest.raises(SystemExit):
        job.build_argv(["--pipeline", "iot", "--layer", "gold"])  # the layer is the file's, not a parameter
    with pytest.raises(SystemExit):
        job.build_argv([])  # --pipeline is required


@pytest.mark.parametrize("layer", LAYERS)
def test_job_command_line_is_accepted_by_the_cli(layer: str, tmp_path: Path) -> None:
    """Every option the entry point emits parses; the run then stops at loading the (empty) config folder."""
    argv = _load_job(layer).build_argv(["--pipeline", "payments", "--target", "k8s", "--conf", str(tmp_path),
                                        "--trigger", "1 second", "--available-now"])
    result = CliRunner().invoke(app, argv[1:])
    assert isinstance(result.exception, ConfigError), result.output
    assert "kappalake.yml" in str(result.exception)
