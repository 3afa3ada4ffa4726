"""`import policies|family|institutions FILE`: the CSV importer (bot.domain.importer), the
one the console's institution upload runs too."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from bot.cli.common import operator, settings
from bot.cli.db import prepare_database

app = typer.Typer(help="Import CSV files (UTF-8, header row).", no_args_is_help=True)


def run_import(kind: str, file: Path, skip_bad: bool, *, exit: bool = True):
    """Import one CSV of `kind` and print the report; exit 1 when rows were rejected."""
    from bot.domain.importer import import_csv

    s = settings()
    prepare_database(s)
    report = import_csv(s, kind, file, skip_bad=skip_bad, progress=sys.stderr.isatty(),
                        actor=operator())
    typer.echo(report.render())
    if exit:
        raise typer.Exit(1 if report.rejected else 0)
    return report


@app.command("policies")
def import_policies(file: Path = typer.Argument(..., help="CSV of policies"),
                    skip_bad: bool = typer.Option(False, "--skip-bad",
                                                  help="Import the good rows anyway.")) -> None:
    """Upsert policies (and their holders) by policy_no; all or nothing unless --skip-bad."""
    run_import("policies", file, skip_bad)


@app.command("family")
def import_family(file: Path = typer.Argument(..., help="CSV of family members"),
                  skip_bad: bool = typer.Option(False, "--skip-bad",
                                                help="Import the good rows anyway.")) -> None:
    """Upsert policyholders' immediate family members."""
    run_import("family", file, skip_bad)


@app.command("institutions")
def import_institutions(file: Path = typer.Argument(..., help="CSV of institutions"),
                        skip_bad: bool = typer.Option(False, "--skip-bad",
                                                      help="Import the good rows anyway.")) -> None:
    """Upsert institutions by code (code, name, city, address, kind, services, phone[, closed])."""
    run_import("institutions", file, skip_bad)
