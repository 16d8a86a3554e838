"""CLI tables: nothing is cut at 80 columns; plain aligned text off a terminal; JSON and CSV on request."""

from __future__ import annotations

import json

import pytest

from kappalake.cli.output import Format, plain, print_table

ROWS = [{"layer": "payments.bronze", "table": "/a/very/long/path/" + "x" * 90 + "/bronze", "rows": 12},
        {"layer": "iot.silver", "table": "/short", "rows": None}]


def test_plain_text_keeps_every_cell_whole_and_aligned() -> None:
    lines = plain(ROWS, ["layer", "table", "rows"]).splitlines()
    assert lines[0].split() == ["layer", "table", "rows"]
    assert ROWS[0]["table"] in lines[1] and "…" not in "".join(lines)
    assert lines[1].index("/a/very") == lines[2].index("/short") == lines[0].index("table")  # aligned columns
    assert lines[2].rstrip().endswith("/short")  # None prints as nothing


def test_off_a_terminal_the_table_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(ROWS, Format.table, title="layers")
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "layers"
    assert ROWS[0]["table"] in out and "│" not in out and "…" not in out


def test_json_lines_and_csv(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(ROWS, "json")
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == ROWS
    print_table(ROWS, "csv", columns=["layer", "rows"])
    assert capsys.readouterr().out.splitlines() == ["layer,rows", "payments.bronze,12", "iot.silver,"]
