"""The kappalake command surface: help lists every command; bad arguments get clear messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("setup", "stack", "produce", "run", "backfill", "query", "status", "dlq", "maintain")


def kappalake(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kappalake.cli.app", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=120)


def test_help_lists_every_command_with_help_text() -> None:
    result = kappalake("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        line = next((ln for ln in result.stdout.splitlines() if f" {command} " in ln), None)
        assert line is not None, f"{command} missing from --help"
        assert len(line.split(command, 1)[1].strip(" │")) > 10, f"{command} has no help text"


def test_query_names_the_unknown_view_and_the_bad_key(tmp_path: Path) -> None:
    env = {"KAPPALAKE_HOME": str(tmp_path)}
    result = kappalake("query", "payments", "nope", env=env)
    assert result.returncode == 2 and "no gold view 'nope'" in result.stderr and "card_velocity_1m" in result.stderr
    result = kappalake("query", "payments", "card_velocity_1m", "--key", "merchant=m1", env=env)
    assert result.returncode == 2 and "groups by card_id, not 'merchant'" in result.stderr
    result = kappalake("query", "payments", "card_velocity_1m", "--format", "xml", env=env)
    assert result.returncode == 2 and "--format 'xml'" in result.stderr


def test_query_before_the_gold_table_exists_says_what_to_run(tmp_path: Path) -> None:
    # embedded chDB (in this process) stays available as a DSN
    result = kappalake("query", "payments", "card_velocity_1m",
                       env={"KAPPALAKE_HOME": str(tmp_path), "CLICKHOUSE_DSN": f"chdb://{tmp_path}/ch"})
    assert result.returncode == 1 and "does not exist yet" in result.stderr
    assert "kappalake run payments --layer gold" in result.stderr and "Traceback" not in result.stderr


def test_unknown_layer_and_pipeline_are_named() -> None:
    result = kappalake("run", "payments", "--layer", "platinum")
    assert result.returncode != 0 and "unknown layer 'platinum'" in result.stderr
    result = kappalake("run", "nosuch", "--layer", "bronze")
    assert result.returncode == 2 and "no pipeline named 'nosuch'" in result.stderr and "payments" in result.stderr


def test_invalid_config_is_reported_without_traceback() -> None:
    conf = REPO / "tests" / "data" / "bad_configs"
    case = next(p for p in sorted(conf.iterdir()) if p.is_dir() and (p / "pipelines").is_dir()
                and (p / "kappalake.yml").exists())
    result = kappalake("--conf", str(case), "status")
    assert result.returncode == 2
    assert "error:" in result.stderr and str(case) in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr


def test_dlq_without_table_says_run_first(tmp_path: Path) -> None:
    result = kappalake("dlq", "payments", "list", env={"KAPPALAKE_HOME": str(tmp_path)})
    assert result.returncode == 1 and "dead-letter table does not exist yet" in result.stderr


def test_produce_rejects_bad_fractions() -> None:
    result = kappalake("produce", "payments", "--events", "10", "--late-fraction", "0.6", "--malformed-fraction",
                       "0.6")
    assert result.returncode != 0 and "sum to at most 1" in result.stderr


def test_query_without_the_local_clickhouse_endpoint_says_how_to_start_it(tmp_path: Path) -> None:
    result = kappalake("query", "payments", "card_velocity_1m", env={"KAPPALAKE_HOME": str(tmp_path)})
    assert result.returncode == 4, result.stderr
    assert "the local ClickHouse endpoint is not running" in result.stderr
    assert "kappalake stack up" in result.stderr and "Traceback" not in result.stderr
