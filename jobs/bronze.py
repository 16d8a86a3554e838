"""Entry point for schedulers (Databricks, Spark-on-Kubernetes): run a pipeline's bronze layer.

Usage: ``python jobs/bronze.py --pipeline payments [--target databricks] [--conf /path/conf] [--available-now]``.
It calls the same code as ``kappalake run <pipeline> --layer bronze``.
"""

from __future__ import annotations

import argparse
import sys

from kappalake.cli.app import main


def build_argv(argv: list[str]) -> list[str]:
    """Translate job parameters into the equivalent ``kappalake run`` command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--target", default=None)
    parser.add_argument("--conf", default=None)
    parser.add_argument("--available-now", action="store_true")
    args = parser.parse_args(argv)
    command = ["kappalake"]
    if args.target:
        command += ["--target", args.target]
    if args.conf:
        command += ["--conf", args.conf]
    command += ["run", args.pipeline, "--layer", "bronze"]
    if args.available_now:
        command.append("--available-now")
    return command


if __name__ == "__main__":
    sys.argv = build_argv(sys.argv[1:])
    main()
