"""Job entry points (jobs/<layer>.py, jobs/maintain.py) map their parameters onto a command line the kappalake
CLI accepts.

The bundle and the Kubernetes manifests are checked in tests/test_deploy_bundle.py and
tests/test_deploy_k8s.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kappalake.cli.app import app
from kappalake.errors import ConfigError
from tests.unit.job_files import load_job

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("bronze", "silver", "gold")




def test_bronze_job_maps_parameters_to_the_cli() -> None:
    job = load_job("bronze")
    assert job.build_argv(["--pipeline", "payments", "--target", "databricks", "--conf", "/c"]) == [
        "kappalake", "--target", "databricks", "--conf", "/c", "run", "payments", "--layer", "bronze"]
    assert job.build_argv(["--pipeline", "iot", "--available-now"])[-1] == "--available-now"


@pytest.mark.parametrize("layer", LAYERS)
def test_each_job_runs_its_own_layer(layer: str) -> None:
    job = load_job(layer)
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
    argv = load_job(layer).build_argv(["--pipeline", "payments", "--target", "k8s", "--conf", str(tmp_path),
                                        "--trigger", "1 second", "--available-now"])
    result = CliRunner().invoke(app, argv[1:])
    assert isinstance(result.exception, ConfigError), result.output
    assert "kappalake.yml" in str(result.exception)


def test_maintain_job_maps_parameters_to_the_cli() -> None:
    job = load_job("maintain")
    assert job.build_argv(["--pipeline", "payments", "--target", "databricks", "--conf", "/c",
                           "--vacuum-retention", "14 days", "--only", "delta"]) == [
        "kappalake", "--target", "databricks", "--conf", "/c", "maintain", "payments",
        "--vacuum-retention", "14 days", "--only", "delta"]
    assert job.build_argv(["--pipeline", "iot"]) == ["kappalake", "maintain", "iot"]
    # blank parameters (a scheduled job's unset ones) are dropped: the pipeline's settings apply
    assert job.build_argv(["--pipeline", "iot", "--target", "", "--conf", "", "--vacuum-retention", "",
                           "--only", ""]) == ["kappalake", "maintain", "iot"]
    for bad in ([], ["--pipeline", "iot", "--only", "gold"], ["--pipeline", "iot", "--layer", "gold"]):
        with pytest.raises(SystemExit):
            job.build_argv(bad)


@pytest.mark.parametrize("only", ["all", "delta", "clickhouse"])
def test_maintain_command_line_is_accepted_by_the_cli(only: str, tmp_path: Path) -> None:
    """Every option the maintenance entry point emits parses; the run then stops at loading the (empty)
    config folder, before any Spark or ClickHouse connection."""
    argv = load_job("maintain").build_argv(["--pipeline", "payments", "--target", "k8s", "--conf", str(tmp_path),
                                             "--vacuum-retention", "2 days", "--only", only])
    result = CliRunner().invoke(app, argv[1:])
    assert isinstance(result.exception, ConfigError), result.output
    assert "kappalake.yml" in str(result.exception)
