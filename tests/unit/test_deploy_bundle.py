"""The Databricks asset bundle (``databricks.yml`` + ``resources/*.yml``) is coherent with the code.

Structural checks only: the ``databricks`` CLI (``databricks bundle validate``) is not installed here and
its bundle JSON schema is not available offline, so these tests parse the YAML with PyYAML and check
what the bundle must get right for kappalake: canonical layout and targets, one continuous job per
reference pipeline and layer, one scheduled maintenance job per reference pipeline, entry points that
exist and accept the job parameters, runtimes that run the default Spark line (and a known runtime for every supported line), secrets only as ``{{secrets/...}}`` references, and job environments that load
the ``databricks`` target. Fast: no workspace, no Spark, no broker.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kappalake import versions
from kappalake.cli.app import app
from kappalake.config.loader import load_pipeline, load_target, pipeline_files
from kappalake.errors import ConfigError
from tests.unit.job_files import load_job

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
LAYERS = ("bronze", "silver", "gold")
REFERENCE_PIPELINES = ("payments", "iot")
MAINTENANCE_CRON = "0 0/30 * * * ?"  # quartz: every 30 minutes
JOB_PARAMETER = re.compile(r"\{\{job\.parameters\.(\w+)\}\}")

#: Databricks Runtime -> (Apache Spark version, Scala binary) it ships (runtime release notes; Databricks
#: ships its own Delta Lake build of the same Spark line).
DBR_VERSIONS: dict[str, tuple[str, str]] = {
    "17.3.x-scala2.13": ("4.0.0", "2.13"),  # 17.3 LTS
    "18.x-scala2.13": ("4.1.0", "2.13"),    # 18 LTS
    "19.x-scala2.13": ("4.2.0", "2.13"),    # 19 (GA 2026-07-23; JDK 21 only)
}

#: Values for variables that have no default (each deployment passes its own with --var).
VARIABLE_PLACEHOLDERS = {
    "kafka_bootstrap_servers": "broker-1.example.net:9093",
    "storage_root": "abfss://lake@account.dfs.core.windows.net/kappalake",
}

SECRETISH = re.compile(r"secret|password|passwd|token|dsn|jaas|credential|private|pii_key|access_key|api_key", re.I)
SECRET_REF = re.compile(r"\{\{secrets/\$\{var\.secret_scope\}/\$\{var\.[a-z0-9_]+\}\}\}")
VAR_REF = re.compile(r"\$\{var\.([A-Za-z0-9_]+)\}")
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@{}]+:[^/\s@{}]+@")


@dataclass(frozen=True)
class Task:
    """One task of a bundle job, with the file it is declared in and its cluster spec."""

    resource: Path
    job_key: str
    job: dict[str, Any]
    task: dict[str, Any]
    cluster: dict[str, Any]

    @property
    def parameters(self) -> list[str]:
        return [str(p) for p in self.task["spark_python_task"].get("parameters", [])]

    def parameter(self, name: str) -> str:
        params = self.parameters
        assert name in params, f"{self.job_key}: no {name} in {params}"
        return params[params.index(name) + 1]

    @property
    def layer(self) -> str:
        return Path(self.task["spark_python_task"]["python_file"]).stem


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: expected a mapping"
    return data


def _bundle() -> dict[str, Any]:
    return _load_yaml(REPO / "databricks.yml")


def _resource_files() -> list[Path]:
    files = sorted({p for pattern in _bundle()["include"] for p in REPO.glob(pattern)})
    assert files, "databricks.yml includes no resource files"
    return files


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (key path, string) in a YAML tree."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def _tasks(continuous: bool = True) -> list[Task]:
    """The tasks of the continuous layer jobs (or, with ``continuous=False``, of the other jobs)."""
    found: list[Task] = []
    seen: set[str] = set()
    for resource in _resource_files():
        for key, job in (_load_yaml(resource).get("resources", {}).get("jobs") or {}).items():
            assert key not in seen, f"job {key} is defined twice"
            seen.add(key)
            if ("continuous" in job) != continuous:
                continue
            clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job.get("job_clusters", [])}
            for task in job["tasks"]:
                cluster = task.get("new_cluster") or clusters.get(task.get("job_cluster_key", ""))
                assert cluster, f"{resource.name}: {key}.{task['task_key']} has no cluster"
                found.append(Task(resource, key, job, task, cluster))
    assert found, "the bundle defines no job tasks"
    return found


def _maintenance_tasks() -> list[Task]:
    """The tasks of the scheduled maintenance jobs (jobs/maintain.py)."""
    return [t for t in _tasks(continuous=False) if t.layer == "maintain"]


def _load_entry() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kappalake_job_entry", REPO / "jobs" / "_entry.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module




def _substitute(params: list[Any], values: dict[str, str], target: str = "prod") -> list[str]:
    """The task parameters of a run with job parameter ``values``, bundle variables resolved for ``target``."""
    concrete = [JOB_PARAMETER.sub(lambda m: values[m.group(1)], str(v)) for v in params]
    return [_resolve(v, target) for v in concrete]


def _parse(parser: argparse.ArgumentParser, params: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(params)
    except SystemExit:
        pytest.fail(f"{parser.prog} rejects the job parameters {params}")


def _resolve(value: str, target: str) -> str:
    """Substitute ``${var.x}`` as ``databricks bundle deploy -t <target>`` would (placeholders when no default)."""
    bundle = _bundle()
    overrides = (bundle["targets"][target] or {}).get("variables") or {}

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in bundle["variables"], f"${{var.{name}}} is not declared in databricks.yml variables"
        if name in overrides:
            return str(overrides[name])
        return str(bundle["variables"][name].get("default", VARIABLE_PLACEHOLDERS.get(name, "")))

    return VAR_REF.sub(value_of, value)


def test_bundle_layout_artifact_and_targets() -> None:
    bundle = _bundle()
    assert bundle["bundle"]["name"] == "kappalake"
    assert bundle["include"] == ["resources/*.yml"]
    wheels = [a for a in bundle["artifacts"].values() if a.get("type") == "whl"]
    assert len(wheels) == 1, "expected one wheel artifact"
    assert (REPO / wheels[0].get("path", ".") / "pyproject.toml").is_file()
    assert re.search(r"\bbuild\b.*--wheel|pip wheel", wheels[0]["build"]), wheels[0]["build"]
    targets = bundle["targets"]
    assert targets["dev"]["mode"] == "development" and targets["dev"].get("default") is True
    assert targets["prod"]["mode"] == "production"
    for path, text in itertools.chain(_strings(bundle), *(_strings(_load_yaml(f)) for f in _resource_files())):
        for name in VAR_REF.findall(text):
            assert name in bundle["variables"], f"{path}: ${{var.{name}}} is not declared"
    missing = [n for n, v in bundle["variables"].items() if "default" not in v and n not in VARIABLE_PLACEHOLDERS]
    assert not missing, f"variables without default and without a test placeholder: {missing}"


def test_one_continuous_job_per_reference_pipeline_and_layer() -> None:
    tasks = _tasks()
    known = pipeline_files(CONF)
    assert set(REFERENCE_PIPELINES) <= set(known)
    pairs = sorted((t.parameter("--pipeline"), t.layer) for t in tasks)
    assert pairs == sorted(itertools.product(REFERENCE_PIPELINES, LAYERS)), pairs
    for t in tasks:
        assert t.job_key == f"{t.parameter('--pipeline')}_{t.layer}"
        assert len(t.job["tasks"]) == 1, f"{t.job_key}: one streaming task per continuous job"
        assert VAR_REF.fullmatch(str(t.job["continuous"]["pause_status"])) or \
            t.job["continuous"]["pause_status"] in ("PAUSED", "UNPAUSED")
        for forbidden in ("max_retries", "depends_on"):  # not allowed on continuous jobs
            assert forbidden not in t.task, f"{t.job_key}: {forbidden} on a continuous job"
        assert "schedule" not in t.job and "trigger" not in t.job
    assert _resolve("${var.pause_status}", "dev") == "PAUSED", "dev deploys the streaming jobs paused"
    assert _resolve("${var.pause_status}", "prod") == "UNPAUSED"


def test_tasks_run_existing_entry_points_with_accepted_parameters() -> None:
    entry = _load_entry()
    targets = _load_yaml(CONF / "kappalake.yml")["targets"]
    wheel_dir = (REPO / next(iter(_bundle()["artifacts"].values())).get("path", ".") / "dist").resolve()
    for t in _tasks():
        python_file = (t.resource.parent / t.task["spark_python_task"]["python_file"]).resolve()
        assert python_file.is_file(), python_file
        assert python_file.parent == REPO / "jobs" and t.layer in LAYERS, python_file
        args = _parse(entry.build_parser(t.layer), t.parameters)
        assert args.pipeline in pipeline_files(CONF), f"{t.job_key}: unknown pipeline {args.pipeline}"
        assert args.target == "databricks" and args.target in targets
        assert args.conf == "${workspace.file_path}/conf" and (CONF / "kappalake.yml").is_file()
        assert entry.build_argv(t.layer, t.parameters)[-2:] == ["--layer", t.layer]
        wheels = [lib["whl"] for lib in t.task.get("libraries", []) if "whl" in lib]
        assert wheels, f"{t.job_key}: the kappalake wheel is not a library of the task"
        assert all((t.resource.parent / w).resolve().parent == wheel_dir for w in wheels), wheels


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_clusters_run_the_default_spark_line(target: str) -> None:
    default = versions.default_line()
    for t in _tasks() + _maintenance_tasks():
        runtime = _resolve(str(t.cluster["spark_version"]), target)
        assert runtime in DBR_VERSIONS, f"{t.job_key}: runtime {runtime!r} not in the known table {list(DBR_VERSIONS)}"
        assert runtime == default.databricks_runtime, \
            f"{t.job_key}: {runtime}, but the default line {default.name} runs on {default.databricks_runtime}"
        assert t.cluster.get("data_security_mode") == "SINGLE_USER"


@pytest.mark.parametrize("name", list(versions.LINES))
def test_every_line_names_a_runtime_of_its_spark_line(name: str) -> None:
    line = versions.LINES[name]
    spark, scala = DBR_VERSIONS[line.databricks_runtime]
    assert spark.rsplit(".", 1)[0] == line.name and scala == versions.SCALA_BINARY, (line.databricks_runtime, spark)
    described = _bundle()["variables"]["spark_version"]["description"]
    assert line.databricks_name.split()[0] in described and f"Spark {line.name}" in described
    assert line.databricks_runtime in (REPO / "databricks.yml").read_text()


def test_secrets_are_only_secret_scope_references() -> None:
    documents = {"databricks.yml": _bundle(), **{f.name: _load_yaml(f) for f in _resource_files()}}
    for name, doc in documents.items():
        for path, text in _strings(doc):
            where = f"{name}: {path}"
            assert not CREDENTIALS_IN_URL.search(text) and "password=" not in text.lower(), f"{where}: credentials"
            if "{{secrets/" in text:
                assert SECRET_REF.fullmatch(text), f"{where}: {text!r} is not {{{{secrets/${{var.secret_scope}}/...}}}}"
            leaf = path.rsplit(".", 1)[-1]
            if SECRETISH.search(leaf) and not path.startswith("variables."):
                assert SECRET_REF.fullmatch(text), f"{where}: a secret must be a secret-scope reference"
    for t in _tasks() + _maintenance_tasks():
        env = t.cluster.get("spark_env_vars", {})
        for key in ("KAFKA_SASL_JAAS_CONFIG", "CLICKHOUSE_DSN"):
            assert SECRET_REF.fullmatch(env.get(key, "")), f"{t.job_key}: {key} must come from the secret scope"
        assert not t.cluster.get("spark_conf"), f"{t.job_key}: settings belong in conf/, secrets in the scope"


def test_job_environment_loads_the_databricks_target_and_pipeline() -> None:
    """What the cluster exports is enough to load the target and pipeline (all required ${VAR} set)."""
    for t in _tasks() + _maintenance_tasks():
        env = {k: SECRET_REF.sub("value-from-secret-scope", _resolve(str(v), "prod"))
               for k, v in t.cluster.get("spark_env_vars", {}).items()}
        target = load_target(CONF, "databricks", env=env)
        assert target.storage.root == VARIABLE_PLACEHOLDERS["storage_root"]
        pipeline = load_pipeline(t.parameter("--pipeline"), CONF, "databricks", env=env)
        raw_env = t.cluster.get("spark_env_vars", {})
        pii = pipeline.silver.pii
        if t.layer in ("silver", "gold") and pii.fields:  # the gold intake pseudonymises like silver
            assert SECRET_REF.fullmatch(raw_env.get(pii.key_env, "")), \
                f"{t.job_key}: {t.layer} pseudonymises {pii.fields} but gets no {pii.key_env} from the secret scope"
        elif "KAPPALAKE_PII_KEY" in raw_env:
            pytest.fail(f"{t.job_key}: gets the PII key without pseudonymising anything")


def test_backfill_job_maps_its_parameters_onto_the_backfill_entry_point() -> None:
    """The parameterised backfill job: every {{job.parameters.x}} is declared, and with the defaults (and
    with a timestamp) the entry point turns the parameters into an accepted ``kappalake backfill`` line."""
    tasks = [t for t in _tasks(continuous=False) if t.layer != "maintain"]
    assert [t.job_key for t in tasks] == ["kappalake_backfill"]
    task = tasks[0]
    assert task.task["spark_python_task"]["python_file"] == "../jobs/backfill.py"
    declared = {p["name"]: p["default"] for p in task.job["parameters"]}
    params = task.task["spark_python_task"]["parameters"]
    used = {m for value in params for m in re.findall(r"\{\{job\.parameters\.(\w+)\}\}", value)}
    assert used == set(declared), f"declared {sorted(declared)}, used {sorted(used)}"
    spec = importlib.util.spec_from_file_location("kappalake_job_backfill", REPO / "jobs" / "backfill.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = {**declared, "from_timestamp": "2026-11-21T10:00:00Z"}
    concrete = [re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: values[m.group(1)], v) for v in params]
    argv = module.build_argv([_resolve(v, "prod") for v in concrete])
    assert argv[argv.index("backfill"):][:4] == ["backfill", "payments", "--layer", "gold"]
    assert "--from-timestamp" in argv and "--to-offsets" not in argv  # blank parameters are dropped
    assert "KAPPALAKE_PII_KEY" in task.cluster["spark_env_vars"]


def test_one_scheduled_maintenance_job_per_reference_pipeline() -> None:
    """Every 30 minutes (UTC), paused like the streaming jobs in dev, one run at a time, on a small cluster."""
    tasks = _maintenance_tasks()
    assert sorted(t.parameter("--pipeline") for t in tasks) == sorted(REFERENCE_PIPELINES)
    for t in tasks:
        assert t.resource.name == "maintain.job.yml"
        assert t.job_key == f"{t.parameter('--pipeline')}_maintain"
        assert t.job["name"] == f"kappalake-{t.parameter('--pipeline')}-maintain"
        assert "continuous" not in t.job and "trigger" not in t.job, f"{t.job_key}: scheduled, not continuous"
        schedule = t.job["schedule"]
        assert schedule["quartz_cron_expression"] == MAINTENANCE_CRON and schedule["timezone_id"] == "UTC"
        assert schedule["pause_status"] == "${var.pause_status}"
        assert t.job["max_concurrent_runs"] == 1, f"{t.job_key}: a second concurrent maintenance run is refused"
        assert len(t.job["tasks"]) == 1
        assert t.cluster["num_workers"] == 1
        assert t.cluster.get("spark_env_vars", {}).get("KAPPALAKE_HOME"), "run records and the maintenance lock"
    assert _resolve("${var.pause_status}", "dev") == "PAUSED"
    assert _resolve("${var.pause_status}", "prod") == "UNPAUSED"


def test_maintenance_jobs_map_their_parameters_onto_the_maintain_entry_point(tmp_path: Path) -> None:
    """Every {{job.parameters.x}} is declared; with the (blank) defaults the entry point runs
    ``kappalake maintain <pipeline>`` with the pipeline's own settings, with values it passes them on, and
    the kappalake CLI accepts the result."""
    job = load_job("maintain")
    wheel_dir = (REPO / next(iter(_bundle()["artifacts"].values())).get("path", ".") / "dist").resolve()
    for t in _maintenance_tasks():
        python_file = (t.resource.parent / t.task["spark_python_task"]["python_file"]).resolve()
        assert python_file == REPO / "jobs" / "maintain.py" and python_file.is_file(), python_file
        wheels = [lib["whl"] for lib in t.task.get("libraries", []) if "whl" in lib]
        assert wheels and all((t.resource.parent / w).resolve().parent == wheel_dir for w in wheels), wheels
        declared = {p["name"]: p["default"] for p in t.job.get("parameters", [])}
        params = t.task["spark_python_task"]["parameters"]
        used = {m for value in params for m in JOB_PARAMETER.findall(str(value))}
        assert used == set(declared), f"{t.job_key}: declared {sorted(declared)}, used {sorted(used)}"
        assert all(default == "" for default in declared.values()), "a scheduled run uses the pipeline's settings"
        pipeline = t.parameter("--pipeline")
        assert pipeline in pipeline_files(CONF)
        argv = job.build_argv(_substitute(params, declared))
        assert argv == ["kappalake", "--target", "databricks", "--conf", "${workspace.file_path}/conf",
                        "maintain", pipeline]
        values = {**declared, "vacuum_retention": "14 days", "only": "delta"}
        argv = job.build_argv(_substitute(params, values))
        assert argv[argv.index("maintain"):] == ["maintain", pipeline, "--vacuum-retention", "14 days",
                                                 "--only", "delta"]
        # the CLI parses every option; the run stops at loading the (empty) config folder
        argv[argv.index("--conf") + 1] = str(tmp_path)
        result = CliRunner().invoke(app, argv[1:])
        assert isinstance(result.exception, ConfigError), result.output
        assert "kappalake.yml" in str(result.exception)
