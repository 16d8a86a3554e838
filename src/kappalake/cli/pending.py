"""Commands whose implementation has not landed yet: they say so and exit non-zero."""

from __future__ import annotations

import typer

from kappalake.errors import NotAvailableYet

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _pending(command: str, issue: str) -> None:
    raise NotAvailableYet(f"'kappalake {command}' is not implemented yet; it lands with {issue}. "
                          "Nothing was done.")


def register(app: typer.Typer) -> None:
    """Add the not-yet-available commands to ``app`` with their help text."""

    @app.command(context_settings=_PASS_THROUGH)
    def backfill(ctx: typer.Context) -> None:
        """Replay a pipeline from an offset or timestamp into its tables (lands with issue #5)."""
        _pending("backfill", "issue #5 (Kappa replays and backfills)")
