"""All Qt code of napari-cellama: dock widgets that gather parameters, start work, add layers."""
