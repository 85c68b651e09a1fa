"""CSV exports that are safe to open in a spreadsheet (no formula injection).

A text cell beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
read by Excel, LibreOffice and Google Sheets as a formula (``=HYPERLINK(...)``,
``@SUM(...)``, DDE payloads). Cell-type labels and cell ids come from user files, so
every per-cell CSV napari-cellama writes passes its text through
:func:`neutralise`, which prefixes such a value with a single quote ``'`` (OWASP's
recommendation; spreadsheets show the text as is). Numbers are written as numbers.

The Xenium Explorer cell-groups CSV (``write_explorer_csv``) keeps cell ids verbatim
(Xenium Explorer must match them to its own cells; Xenium ids never start with these
characters) and neutralises group names the same way (a group then shows with its
leading ``'`` in Explorer).
"""

from __future__ import annotations

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""First characters a spreadsheet treats as the start of a formula."""


def neutralise(value):
    """``value`` with a leading ``'`` if it is text starting like a formula; other values as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _is_text(series: pd.Series) -> bool:
    return (series.dtype == object or isinstance(series.dtype, pd.CategoricalDtype)
            or pd.api.types.is_string_dtype(series.dtype))


def _safe_series(series: pd.Series) -> pd.Series:
    if not _is_text(series):
        return series
    values = series.astype(object)
    risky = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_START)).to_numpy(dtype=bool)
    if not risky.any():
        return series
    out = values.copy()
    out[risky] = ["'" + v for v in values[risky]]
    return out


def safe_for_spreadsheets(table: pd.DataFrame, columns=None, index: bool = True) -> pd.DataFrame:
    """A copy of ``table`` whose text cells (all, or ``columns``) and index are neutralised."""
    out = table.copy()
    for col in out.columns if columns is None else columns:
        if col in out:
            out[col] = _safe_series(out[col])
    if index and _is_text(pd.Series(out.index)):
        name = out.index.name
        out.index = pd.Index(_safe_series(pd.Series(out.index, dtype=object)).to_numpy(), name=name)
    out.columns = pd.Index([neutralise(c) for c in out.columns], name=out.columns.name)
    return out


def write_csv(path, table: pd.DataFrame, **to_csv) -> None:
    """Write ``table`` as a spreadsheet-safe CSV, atomically (see :mod:`napari_cellama.atomic`)."""
    from ..atomic import write_file

    safe = safe_for_spreadsheets(table, index=to_csv.get("index", True))
    write_file(path, lambda tmp: safe.to_csv(tmp, **to_csv))


__all__ = ["FORMULA_START", "neutralise", "safe_for_spreadsheets", "write_csv"]
