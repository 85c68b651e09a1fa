"""Data files shipped with napari-cellama (``markers_default.csv``; see README.md here)."""
