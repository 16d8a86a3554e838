"""``kappalake forget``: help, and clear errors before any JVM starts."""

from __future__ import annotations

import os
from pathlib import Path

from kappalake.ops.runinfo import write_run_record
from tests.unit.test_cli_surface import kappalake


def test_forget_help_documents_the_actions() -> None:
    result = kappalake("forget", "--help")
    assert result.returncode == 0
    for text in ("--subject", "--reason", "--status", "--apply", "--purge", "--retention", "erasure register",
                 "<pipeline>.forget", "Time travel", "Kafka keeps"):
        assert text in result.stdout, text
    assert " forget " in kappalake("--help").stdout


def test_forget_errors_name_what_is_wrong(tmp_path: Path) -> None:
    env = {"KAPPALAKE_HOME": str(tmp_path), "KAPPALAKE_PII_KEY": "k"}
    cases = [
        (("forget", "nosuch", "--status"), "no pipeline named 'nosuch'"),
        (("forget", "payments", "--subject", "merchant_id=m-1"), "'merchant_id' is not a subject field"),
        (("forget", "payments", "--subject", "nope=1"), "has no field 'nope'"),
        (("forget", "payments", "--subject", "card_id"), "expected FIELD=VALUE"),
        (("forget", "payments"), "give one of --subject"),
        (("forget", "payments", "--status", "--retention", "1 hour"), "--retention applies to --purge only"),
        (("forget", "payments", "--purge", "--retention", "soon"), "--retention"),
        (("forget", "iot", "--status"), "configures no data subjects"),
    ]
    for args, message in cases:
        result = kappalake(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)


def test_purge_is_refused_while_a_job_holds_the_tables(tmp_path: Path) -> None:
    write_run_record(tmp_path / "runs" / "payments", "silver", pid=os.getpid(), finished_at=None)
    result = kappalake("forget", "payments", "--purge", env={"KAPPALAKE_HOME": str(tmp_path),
                                                             "KAPPALAKE_PII_KEY": "k"})
    assert result.returncode == 8, result.stderr
    assert "cannot purge while its jobs hold the tables" in result.stderr and f"pid {os.getpid()}" in result.stderr


def test_status_before_any_request_is_empty(tmp_path: Path) -> None:
    result = kappalake("forget", "payments", "--status", "--format", "json", env={"KAPPALAKE_HOME": str(tmp_path)})
    assert result.returncode == 0 and result.stdout == ""
