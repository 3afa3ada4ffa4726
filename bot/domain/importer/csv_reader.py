"""Reading an import file: UTF-8 lines (with or without BOM), CSV records, the header's layout."""
from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO


from bot.domain.importer.cells import Field, Parser
from bot.domain.importer.report import FileError


# --- Reading ------------------------------------------------------------------------------------


class _Lines:
    """The decoded lines of a binary file, counting lines and bytes; UTF-8 or a FileError."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.line = 0
        self.bytes = 0

    def __iter__(self) -> Iterator[str]:
        for raw in self.fh:
            self.line += 1
            self.bytes += len(raw)
            if self.line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                decoded = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FileError(self.line, f"the file is not UTF-8 (byte 0x{raw[exc.start]:02x} "
                                           f"at byte {exc.start + 1} of the line); "
                                           f"save it as CSV UTF-8") from None
            yield decoded


def _records(lines: _Lines) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each non-blank CSV record."""
    reader = csv.reader(lines)
    start = 1
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                yield start, cells
            start = reader.line_num + 1
    except csv.Error as exc:
        raise FileError(lines.line, f"not readable as CSV: {exc}") from None


@dataclass(frozen=True)
class Layout:
    """Where a kind's columns sit in one file's records (read from its header)."""
    width: int  # cells in every record
    fields: tuple[Field, ...]
    ignored: tuple[str, ...]  # header names the import does not know


def read_header(cells: list[str], columns: dict[str, Parser],
                optional: tuple[str, ...] = ()) -> Layout:
    """The layout of the file whose header is `cells`, or a FileError on line 1. A column in
    `optional` may be left out (its cells then read as empty)."""
    names = [c.strip().lower() for c in cells]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise FileError(1, f"column {repeated[0]} appears more than once in the header")
    missing = [c for c in columns if c not in names and c not in optional]
    if missing:
        raise FileError(1, f"missing column(s) in the header: {', '.join(missing)}")
    return Layout(len(cells), tuple((c, names.index(c) if c in names else None, parse)
                                    for c, parse in columns.items()),
                  tuple(n for n in names if n and n not in columns))
