"""Subcommands of the ``napari-cellama`` CLI (one module each) and shared helpers."""
