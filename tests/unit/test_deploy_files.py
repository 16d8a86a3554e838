"""Deployment files reference things that exist: job entry points, conf, bundle includes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from kappalake.config.loader import pipeline_files

REPO = Path(__file__).resolve().parents[2]


def _load_job(name: str):
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


def test_bundle_references_existing_files_and_pipelines() -> None:
    bundle = yaml.safe_load((REPO / "databricks.yml").read_text())
    assert set(bundle["targets"]) == {"dev", "prod"} and bundle["targets"]["dev"]["mode"] == "development"
    resources = [p for pattern in bundle["include"] for p in REPO.glob(pattern)]
    assert resources
    pipelines = pipeline_files(REPO / "conf")
    for resource in resources:
        jobs = yaml.safe_load(resource.read_text())["resources"]["jobs"]
        for job in jobs.values():
            for task in job["tasks"]:
                python_file = (resource.parent / task["spark_python_task"]["python_file"]).resolve()
                assert python_file.exists(), python_file
                params = task["spark_python_task"]["parameters"]
                assert params[params.index("--pipeline") + 1] in pipelines
                env = task["new_cluster"]["spark_env_vars"]
                assert all("{{secrets/" in env[k] for k in ("KAFKA_SASL_JAAS_CONFIG", "CLICKHOUSE_DSN"))
