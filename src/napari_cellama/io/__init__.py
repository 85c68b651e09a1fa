"""Reading queries and references (Qt-free)."""

from .export import (
    Session,
    build_spatialdata,
    cells_anndata,
    check_destination,
    explorer_groups,
    load_session,
    write_cells_csv,
    write_explorer_csv,
    write_h5ad,
    write_spatialdata,
)
from .readers import expression_for_sentences, is_xenium_path, read_anndata, read_query, read_reference
from .xenium import XeniumReadError, read_xenium, read_xenium_table, xenium_root

__all__ = [
    "Session",
    "build_spatialdata",
    "cells_anndata",
    "check_destination",
    "explorer_groups",
    "load_session",
    "write_cells_csv",
    "write_explorer_csv",
    "write_h5ad",
    "write_spatialdata",
    "XeniumReadError",
    "expression_for_sentences",
    "is_xenium_path",
    "read_anndata",
    "read_query",
    "read_reference",
    "read_xenium",
    "read_xenium_table",
    "xenium_root",
]
