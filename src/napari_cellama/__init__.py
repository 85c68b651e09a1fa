"""napari-cellama: annotate 10x Xenium runs in napari with CELLama cell sentences."""

__version__ = "0.1.0"
