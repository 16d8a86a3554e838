"""Shared parameters of the job entry points ``jobs/bronze.py``, ``jobs/silver.py`` and ``jobs/gold.py``.

Schedulers (Databricks ``spark_python_task``, Spark-on-Kubernetes ``mainApplicationFile``) pass job
parameters; :func:`build_argv` maps them onto the ``kappalake`` command line and :func:`run` runs the
CLI in this process, so a scheduled job runs exactly the code of ``kappalake run <pipeline> --layer <layer>``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

LAYERS = ("bronze", "silver", "gold")


def build_parser(layer: str) -> argparse.ArgumentParser:
    """The parameters every entry point accepts (the layer is fixed by the file that is run)."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}")
    parser = argparse.ArgumentParser(
        prog=f"{layer}.py",
        description=f"Run a pipeline's {layer} layer: the same code as 'kappalake run <pipeline> --layer {layer}'.",
    )
    parser.add_argument("--pipeline", required=True, help="pipeline name (conf/pipelines/<name>.yml)")
    parser.add_argument("--target", help="target in kappalake.yml: local, databricks, k8s "
                                         "(default $KAPPALAKE_TARGET, else local)")
    parser.add_argument("--conf", help="config folder with kappalake.yml and pipelines/ "
                                       "(default $KAPPALAKE_CONF, else ./conf)")
    parser.add_argument("--available-now", action="store_true",
                        help="process everything available now, then stop (batch-like run)")
    parser.add_argument("--trigger", help="micro-batch interval of a live run, e.g. '10 seconds'")
    return parser


def build_argv(layer: str, argv: Sequence[str]) -> list[str]:
    """Translate job parameters into the equivalent ``kappalake run`` command line."""
    args = build_parser(layer).parse_args(list(argv))
    return cli_argv(args, ["run", args.pipeline, "--layer", layer], options=("trigger",), flags=("available_now",))


def cli_argv(args: argparse.Namespace, command: Sequence[str], options: Sequence[str] = (),
             flags: Sequence[str] = ()) -> list[str]:
    """``kappalake [--target T] [--conf DIR] <command> [--<option> value]... [--<flag>]...`` from parsed job
    parameters; blank values (a parameterised job's unused ones) are left out."""
    argv = ["kappalake"]
    for option in ("target", "conf"):
        if getattr(args, option, None):
            argv += [f"--{option}", getattr(args, option)]
    argv += list(command)
    for option in options:
        if getattr(args, option):
            argv += [f"--{option.replace('_', '-')}", getattr(args, option)]
    return argv + [f"--{flag.replace('_', '-')}" for flag in flags if getattr(args, flag)]


def run(layer: str, argv: Sequence[str] | None = None) -> None:
    """Run ``layer`` with the job parameters ``argv`` (default: this process's arguments)."""
    sys.argv = build_argv(layer, sys.argv[1:] if argv is None else argv)
    from kappalake.cli.app import main  # imported late: --help and bad parameters need no package import

    main()
