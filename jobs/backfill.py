"""Entry point for schedulers (Databricks, Spark-on-Kubernetes): replay a range through one layer.

Usage: ``python jobs/backfill.py --pipeline payments --layer gold (--from-timestamp ISO | --from-offsets JSON |
--from-earliest) [--to-timestamp ISO | --to-offsets JSON] [--name RUN] [--target databricks] [--conf DIR]
[--dry-run]``. It runs the same code as ``kappalake backfill`` (see README, "Backfills"). Empty parameters
are ignored, so a parameterised job can leave unused ones blank.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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
    command = ["kappalake"]
    if args.target:
        command += ["--target", args.target]
    if args.conf:
        command += ["--conf", args.conf]
    command += ["backfill", args.pipeline, "--layer", args.layer]
    for option in ("from_timestamp", "from_offsets", "to_timestamp", "to_offsets", "name", "max_offsets_per_trigger"):
        if getattr(args, option):
            command += [f"--{option.replace('_', '-')}", getattr(args, option)]
    for flag in ("from_earliest", "dry_run"):
        if getattr(args, flag):
            command.append(f"--{flag.replace('_', '-')}")
    return command


if __name__ == "__main__":
    sys.argv = build_argv(sys.argv[1:])
    from kappalake.cli.app import main

    main()
