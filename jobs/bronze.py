"""Entry point for schedulers (Databricks, Spark-on-Kubernetes): run a pipeline's bronze layer.

Kafka -> Delta bronze.

Usage: ``python jobs/bronze.py --pipeline payments [--target databricks] [--conf /path/conf] [--available-now]
[--trigger '10 seconds']``. It runs the same code as ``kappalake run <pipeline> --layer bronze``
(parameters: jobs/_entry.py).
"""

from __future__ import annotations

import os
import sys

# Make jobs/_entry.py importable even when the scheduler exec()s this file without its folder on sys.path
# (Databricks: no __file__ then, but the working directory is the script's folder on DBR 14+).
sys.path.insert(0, os.path.dirname(os.path.abspath(globals().get("__file__", "_entry.py"))))

import _entry  # noqa: E402

LAYER = "bronze"


def build_argv(argv: list[str]) -> list[str]:
    """Translate job parameters into the equivalent ``kappalake run`` command line."""
    return _entry.build_argv(LAYER, argv)


if __name__ == "__main__":
    _entry.run(LAYER)
