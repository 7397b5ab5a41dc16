"""napari plugin for clipseg (thin adapter over the engine)."""
