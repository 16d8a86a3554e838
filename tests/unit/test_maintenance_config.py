"""Maintenance settings: defaults, the VACUUM safety margin, the one-run-at-a-time lock, running writers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kappalake.config.models import MaintenanceConfig
from kappalake.errors import ConfigError, MaintenanceRefused
from kappalake.ops.maintenance.run import check_retention, exclusive
from kappalake.ops.runinfo import running_writers, write_run_record
from kappalake.runtime.context import RunContext

CONF = Path(__file__).resolve().parents[2] / "conf"


def context(tmp_path: Path, local_target, **maintenance) -> RunContext:  # type: ignore[no-untyped-def]
    from kappalake.config.loader import load_pipeline
    from kappalake.runtime.paths import HomeLayout

    pipeline = load_pipeline("payments", CONF, "local")
    pipeline = pipeline.model_copy(update={"maintenance": MaintenanceConfig(**maintenance)})
    return RunContext(pipeline, local_target, HomeLayout(tmp_path, tmp_path / "cache"))


def test_defaults_keep_a_week_of_files_and_refuse_less_than_a_day() -> None:
    settings = MaintenanceConfig()
    assert (settings.vacuum_retention, settings.min_vacuum_retention) == ("604800 seconds", "86400 seconds")
    assert settings.compact_below_mb == 32 and settings.clickhouse.final_closed_partitions


def test_a_configured_retention_below_the_margin_is_rejected_naming_both() -> None:
    with pytest.raises(ValueError, match=r"vacuum_retention \(3600 seconds\) is shorter than min_vacuum_retention "
                                         r"\(86400 seconds\)"):
        MaintenanceConfig(vacuum_retention="1 hour")


def test_a_retention_given_at_run_time_below_the_margin_is_refused(tmp_path: Path, local_target) -> None:
    ctx = context(tmp_path, local_target, min_vacuum_retention="2 hours", vacuum_retention="3 hours")

    assert check_retention(ctx, "3 hours") == 3 * 3600
    with pytest.raises(MaintenanceRefused, match="shorter than the safety margin") as refused:
        check_retention(ctx, "30 minutes")
    assert "'payments'" in str(refused.value) and "30 minutes" in str(refused.value)
    assert refused.value.exit_code == 8
    with pytest.raises(ConfigError, match="vacuum retention"):
        check_retention(ctx, "soon")


def test_a_second_maintenance_run_of_a_pipeline_is_refused_while_one_holds_it(tmp_path: Path, local_target) -> None:
    ctx = context(tmp_path, local_target)
    with exclusive(ctx):
        with pytest.raises(MaintenanceRefused, match=f"pid {os.getpid()}"):
            with exclusive(ctx):
                pass
    with exclusive(ctx):  # released
        pass


def test_running_writers_are_the_open_runs_of_live_processes(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_run_record(tmp_path, "bronze", pid=os.getpid(), finished_at=None)
    write_run_record(tmp_path, "silver", pid=dead.pid, finished_at=None)  # SIGKILLed: unclosed, process gone
    write_run_record(tmp_path, "gold", pid=os.getpid(), finished_at=1.0)  # closed
    write_run_record(tmp_path / "_backfills" / "fix-1", "silver", pid=os.getpid(), finished_at=None)

    assert running_writers(tmp_path, ("bronze", "silver", "gold")) == {"bronze": os.getpid(),
                                                                      "backfill:fix-1": os.getpid()}


def test_a_cdc_pipeline_also_maintains_silvers_history_and_deletes_tables(tmp_path: Path, local_target) -> None:
    """The tables silver_cdc writes next to silver, where it writes them; left alone while the silver job
    MERGEs into them."""
    from kappalake.config.loader import load_pipeline
    from kappalake.ops.maintenance.run import _merge_writer, delta_table_names, table_path
    from kappalake.pipelines.silver_cdc import deletes_path, history_path
    from kappalake.runtime.context import RunContext
    from kappalake.runtime.paths import HomeLayout

    layout = HomeLayout(home=tmp_path, cache=tmp_path / "cache")
    orders = RunContext(load_pipeline("orders", CONF, "local"), local_target, layout)
    payments = RunContext(load_pipeline("payments", CONF, "local"), local_target, layout)
    assert delta_table_names(orders)[-2:] == ("silver_history", "silver_deletes")
    assert "silver_history" not in delta_table_names(payments)
    assert (table_path(orders, "silver_history"), table_path(orders, "silver_deletes")) == (
        history_path(orders), deletes_path(orders))
    assert "merges into it" in (_merge_writer(orders, "silver_history", {"silver": 123}) or "")
    assert _merge_writer(orders, "silver_history", {}) is None
