"""Entry point for schedulers (Databricks, Spark-on-Kubernetes): one maintenance pass over a pipeline's tables.

Delta compaction, VACUUM and log retention; ClickHouse part merges.

Usage: ``python jobs/maintain.py --pipeline payments [--target databricks] [--conf DIR] [--vacuum-retention '7 days']
[--only all|delta|clickhouse]``. It runs the same code as ``kappalake maintain <pipeline>``, which is safe next to
the live jobs; schedule it every 15-60 minutes, one run at a time (a second concurrent run on the same machine is
refused with exit code 8). Empty parameters are ignored, so a parameterised job can leave unused ones blank.
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

ONLY = ("all", "delta", "clickhouse")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maintain.py", description="One maintenance pass: 'kappalake maintain'.")
    parser.add_argument("--pipeline", required=True)
    for option in ("--target", "--conf", "--vacuum-retention"):
        parser.add_argument(option, default="")
    parser.add_argument("--only", default="", choices=("", *ONLY), metavar="{" + ",".join(ONLY) + "}")
    return parser


def build_argv(argv: Sequence[str]) -> list[str]:
    """Translate job parameters into the equivalent ``kappalake maintain`` command line."""
    args = build_parser().parse_args(list(argv))
    return _entry.cli_argv(args, ["maintain", args.pipeline], options=("vacuum_retention", "only"))


if __name__ == "__main__":
    sys.argv = build_argv(sys.argv[1:])
    from kappalake.cli.app import main

    main()
