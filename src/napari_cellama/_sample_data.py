"""npe2 sample data: File > Open Sample > napari-cellama > CELLama demo.

The demo run is generated once into the user cache (see :mod:`napari_cellama.datasets`)
and opened like any Xenium folder. Its matched reference is at
``make_demo().reference_h5ad``; the load widget's "Demo" button selects both.
"""

from __future__ import annotations


def demo_sample() -> list[tuple]:
    """Layer-data tuples of the demo Xenium run (built on first use, seconds)."""
    from .datasets import make_demo
    from .io.xenium_run import open_xenium_run
    from .layers import xenium_layer_data

    demo = make_demo()
    return xenium_layer_data(open_xenium_run(demo.xenium_dir))
