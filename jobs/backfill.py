"""Entry point for schedulers (Databricks, Spark-on-Kubernetes): replay a range through one layer.

Usage: ``python jobs/backfill.py --pipeline payments --layer gold (--from-timestamp ISO | --from-offsets JSON |
--from-earliest) [--to-timestamp ISO | --to-offsets JSON] [--name RUN] [--target databricks] [--conf DIR]
[--dry-run]``. It runs the same code as ``kappalake backfill`` (see README, "Backfills"). Empty parameters
are ignored, so a parameterised job can leave unused ones blank.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# Make jobs/_entry.py importable even when the scheduler exec()s this file without its folder on sys.path
# (Databricks: no __file__ then, but the working directory is the script's folder on DBR 14+).
sys.path.insert(0, os.path.dirname(os.path.abspath(globals().get("__file__", "_entry.py"))))

import _entry  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backfill.py", description="Replay a range: 'kappalake backfill'.")
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--layer", required=True, choices=("bronze", "silver", "gold"))
    for option in ("--from-timestamp", "--from-offsets", "--to-timestamp", "--to-offsets", "--name",
                   "--target", "--conf", "--max-offsets-per-trigger"):
        parser.add_argument(option, default="")
    parser.add_argument("--from-earliest", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    return parser


def build_argv(argv: Sequence[str]) -> list[str]:
    """Translate job parameters into the equivalent ``kappalake backfill`` command line."""
    args = build_parser().parse_args(list(argv))
    return _entry.cli_argv(args, ["backfill", args.pipeline, "--layer", args.layer],
                           options=("from_timestamp", "from_offsets", "to_timestamp", "to_offsets", "name",
                                    "max_offsets_per_trigger"), flags=("from_earliest", "dry_run"))


if __name__ == "__main__":
    sys.argv = build_argv(sys.argv[1:])
    from kappalake.cli.app import main

    main()
