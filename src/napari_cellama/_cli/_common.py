"""Helpers shared by CLI subcommands: progress on stderr, output paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path


class StderrProgress:
    """``callback(stage, done, total)`` that draws one updating line per stage on stderr."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.stage = None
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = -1

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            if self.stage is not None:
                self.stream.write("\n")
            self.stage = stage
            self._last = -1
        pct = int(100 * done / total) if total else 100
        if self.tty:
            self.stream.write(f"\r{stage}: {done}/{total} ({pct}%)")
        elif pct // 10 != self._last // 10 or done == total:  # a line every 10% when piped
            self.stream.write(f"{stage}: {done}/{total} ({pct}%)\n")
        self._last = pct
        self.stream.flush()

    def close(self) -> None:
        if self.stage is not None and self.tty:
            self.stream.write("\n")
        self.stream.flush()


def output_path(path: str | os.PathLike, what: str = "output", sources=()) -> Path:
    """An output file path checked like every export (see ``io.destinations.check_destination``)."""
    from ..io.destinations import check_destination

    return check_destination(path, what, sources=sources)


def write_csv(path: Path, table, **to_csv) -> None:
    """Write a per-cell table as a spreadsheet-safe CSV, atomically (see ``io.csv_safety``)."""
    from ..io.csv_safety import write_csv as _write_csv

    _write_csv(path, table, **to_csv)
