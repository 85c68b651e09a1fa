"""Reading queries and references (Qt-free)."""

from .readers import expression_for_sentences, is_xenium_path, read_anndata, read_query, read_reference
from .xenium import XeniumReadError, read_xenium, read_xenium_table, xenium_root

__all__ = [
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
