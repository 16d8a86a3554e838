"""The ``kappalake`` command: a typer app; errors print one clear message, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kappalake import __version__
from kappalake.cli import backfill, dlq, forget, maintain, produce, quality, query, run, setup, stack, status
from kappalake.cli.common import GlobalOptions, err_console
from kappalake.config.loader import default_conf_dir, default_target
from kappalake.errors import KappalakeError
from kappalake.ops.stop_signals import JobStopped

app = typer.Typer(
    help="kappalake: Spark Structured Streaming lakehouse pipelines (Kafka -> Delta -> ClickHouse), "
         "live and replayed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"kappalake {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    conf: Path = typer.Option(None, "--conf", envvar="KAPPALAKE_CONF",
                              help="Config folder (kappalake.yml + pipelines/). Default ./conf."),
    target: str = typer.Option(None, "--target", envvar="KAPPALAKE_TARGET",
                               help="Target in kappalake.yml: local, databricks, k8s. Default local."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Global options."""
    ctx.obj = GlobalOptions(conf_dir=(conf or default_conf_dir()).resolve(), target=target or default_target())


app.command("setup")(setup.command)
app.add_typer(stack.app, name="stack")
app.command("produce")(produce.command)
app.command("run")(run.command)
app.command("backfill")(backfill.command)
app.command("dlq")(dlq.command)
app.command("query")(query.command)
app.command("status")(status.command)
app.command("quality")(quality.command)
app.command("maintain")(maintain.command)
app.command("forget")(forget.command)


def main() -> None:
    """Entry point of the ``kappalake`` script."""
    try:
        app()
    except JobStopped as exc:
        err_console.print(str(exc), highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KappalakeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
