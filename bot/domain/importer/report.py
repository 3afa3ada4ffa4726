"""The import's report: rows read, written and rejected (each rejection names its file line)."""
from __future__ import annotations


import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


from bot.domain.importer.cells import _rows


SHOWN_REJECTIONS = 50  # lines printed in the report
KEPT_REJECTIONS = 1000  # lines kept in memory (all are counted)


# --- The report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    line: int | None  # None: the file as a whole
    reason: str

    def __str__(self) -> str:
        return self.reason if self.line is None else f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    kind: str
    path: Path
    skip_bad: bool = False
    rows: int = 0  # data rows read
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    customers_inserted: int = 0
    customers_updated: int = 0
    rejected: int = 0  # rejected rows, plus 1 for a file-level error
    rejections: list[Rejection] = field(default_factory=list)  # the first KEPT_REJECTIONS
    file_error: Rejection | None = None
    ignored_columns: list[str] = field(default_factory=list)
    written: bool = False
    affected_customers: set[int] = field(default_factory=set)
    tier_changes: str = ""
    seconds: float = 0.0
    first_import: bool = False  # PostgreSQL: into an empty policy table, indexes rebuilt after
    phases: dict[str, float] = field(default_factory=dict)  # seconds of each timed step

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a step of the import (added to `phases[name]`; the benchmark prints them)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < KEPT_REJECTIONS:
            self.rejections.append(Rejection(line, reason))

    def abort(self, line: int | None, reason: str) -> None:
        """A file-level error: nothing of the file is imported."""
        self.discard_counts()
        self.written = False
        self.file_error = Rejection(line, reason)
        self.rejected += 1

    def discard_counts(self) -> None:
        """The transaction was rolled back: nothing counted so far was written."""
        self.inserted = self.updated = self.unchanged = 0
        self.customers_inserted = self.customers_updated = 0
        self.affected_customers.clear()

    def render(self) -> str:
        head = (f"bind --file {self.path}" if self.kind == "bindings"
                else f"import {self.kind} from {self.path}")
        bad_rows = self.rejected - (self.file_error is not None)
        if self.file_error:
            lines = [f"{head}: the file cannot be imported", f"  {self.file_error}"]
        elif self.kind == "bindings":
            lines = [f"{head}: {self.rows} rows read in {self.seconds:.1f} s",
                     f"  bound      {self.inserted + self.updated}",
                     f"  unchanged  {self.unchanged} (already bound to that customer)",
                     f"  rejected   {bad_rows}"]
            if self.ignored_columns:
                lines.append(f"  ignored columns: {', '.join(self.ignored_columns)}")
        else:
            lines = [f"{head}: {self.rows} rows read in {self.seconds:.1f} s",
                     f"  inserted   {self.inserted}",
                     f"  updated    {self.updated}",
                     f"  unchanged  {self.unchanged}",
                     f"  rejected   {bad_rows}"]
            if self.kind == "policies":
                lines.append(f"  customers  {self.customers_inserted} new, "
                             f"{self.customers_updated} updated")
            if self.tier_changes:
                lines.append(f"  tier changes: {self.tier_changes}")
            if self.ignored_columns:
                lines.append(f"  ignored columns: {', '.join(self.ignored_columns)}")
        if self.rejections:
            lines.append("Rejected lines:")
            shown = sorted(self.rejections, key=lambda r: r.line or 0)[:SHOWN_REJECTIONS]
            lines += [f"  {r}" for r in shown]
            if bad_rows > SHOWN_REJECTIONS:
                lines.append(f"  ... and {bad_rows - SHOWN_REJECTIONS} more")
        if self.file_error:
            lines.append("Nothing was written.")
        elif not self.written and bad_rows:
            lines.append(f"Nothing was written. Fix the rejected lines, or run again with "
                         f"--skip-bad to {'bind' if self.kind == 'bindings' else 'import'} "
                         f"the {_rows(self.rows - bad_rows)} that are good.")
        return "\n".join(lines)


class FileError(Exception):
    """The file cannot be imported at all (line, reason)."""

    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(line, reason)
        self.line, self.reason = line, reason
