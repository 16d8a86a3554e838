"""``kappalake forget <pipeline>``: the right to erasure (register a data subject, delete, purge, status)."""

from __future__ import annotations

import typer

from kappalake.cli.common import console, global_options
from kappalake.cli.maintain import jvm_console_on_stderr
from kappalake.cli.output import Format, print_table
from kappalake.config.erasure import parse_subject, retention_seconds
from kappalake.errors import ConfigError

HELP = """Forget a data subject in every layer of a pipeline (right to erasure).

\b
--subject card_id=card-000042 --reason "ticket 1234"
  Registers the subject in the erasure register (only the HMAC of the
  value under the pipeline's PII key is stored), then deletes its rows
  from silver, dead letters, late events and bronze (Delta) and from
  the gold views configured 'delete' (ClickHouse). Running jobs,
  backfills and replays drop its records from their next batch on.
--status   every request and the layers still pending.
--apply    delete the rows of every registered subject again (e.g.
           after requests filed on the topic <pipeline>.forget).
--purge    with the jobs stopped: apply every request, rewrite the
           tables (REORG ... APPLY (PURGE) where deletion vectors are
           on), VACUUM with erasure.purge_retention (or --retention)
           and scrub the pseudonyms from the Delta log statistics.
           Time travel to versions before the purge is gone.

Configure subject fields, seen_again (drop|keep) and the per-view
ClickHouse action in the pipeline's 'erasure:' section. Kafka keeps
the records until the topic's retention expires (README: Personal
data)."""


def command(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="Pipeline name."),
    subject: str | None = typer.Option(None, "--subject", help="FIELD=VALUE of the subject to forget; FIELD must "
                                                               "be in erasure.subject_fields."),
    reason: str | None = typer.Option(None, "--reason", help="Why (stored in the register; never personal data)."),
    status: bool = typer.Option(False, "--status", help="List the requests and what is still pending."),
    apply: bool = typer.Option(False, "--apply", help="Delete the rows of every pending request."),
    purge: bool = typer.Option(False, "--purge", help="Remove deleted rows' files for good (jobs must be stopped)."),
    retention: str | None = typer.Option(None, "--retention", help="--purge: VACUUM retention (default "
                                                                   "erasure.purge_retention, e.g. '0 hours')."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, json (one object per line) or csv."),
) -> None:
    run_ctx = global_options(ctx).context(pipeline)
    from kappalake.ops import erasure, erasure_purge
    from kappalake.pipelines.erasure import check_subject, hmac_key, require_erasure

    require_erasure(run_ctx)
    if sum([subject is not None, status, apply]) != 1 and not (purge and not status and not apply):
        raise ConfigError("give one of --subject FIELD=VALUE, --status, --apply or --purge (--purge may follow "
                          "--subject)")
    if retention is not None and not purge:
        raise ConfigError("--retention applies to --purge only")
    if status:
        rows = erasure.status_rows(run_ctx)
        print_table(rows, fmt, title=f"{pipeline}: erasure requests ({len(rows)})", columns=erasure.STATUS_COLUMNS)
        return
    parsed = None
    if subject is not None:
        try:
            parsed = parse_subject(subject)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check_subject(run_ctx, parsed[0])
        hmac_key(run_ctx)
    if purge:
        try:
            retention_seconds(retention or run_ctx.pipeline.erasure.purge_retention)
        except ValueError as exc:
            raise ConfigError(f"--retention: {exc}") from None
        erasure_purge.refuse_while_running(run_ctx)  # before any JVM
    ch = None
    if run_ctx.pipeline.gold.views:
        from kappalake.io.clickhouse.client import connect

        ch = connect(run_ctx.target.clickhouse.dsn)
    with jvm_console_on_stderr():
        from kappalake.runtime.spark import build_spark

        spark = build_spark(run_ctx.target, app_name=f"kappalake-forget-{pipeline}")
        request = None
        if parsed is not None:
            request = erasure.file_request(spark, run_ctx, parsed[0], parsed[1], reason)
        if purge:
            report = erasure_purge.purge(spark, run_ctx, ch, retention)
            rows = report.tables
        else:
            only = [request.request_id] if request is not None else None
            applied = erasure.apply_requests(spark, run_ctx, ch, only=only)
            rows = [{"table": name, "deleted": count} for name, count in applied.deleted.items()]
    if request is not None and fmt is Format.table:
        console.print(f"{pipeline}: {'registered' if request.new else 'already registered'} "
                      f"{request.subject_field} (request {request.request_id}, pseudonym {request.subject_hmac[:12]}…)",
                      highlight=False)
    print_table(rows, fmt, title=f"{pipeline}: {'purge' if purge else 'rows deleted'}",
                columns=("table", "deleted", "reorg", "vacuum", "log") if purge else ("table", "deleted"))


command.__doc__ = HELP
