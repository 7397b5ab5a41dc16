"""The applications of the engine: the `clipseg` command, batch and Dask runs, evaluation,
calibration, the demo and the benchmark datasets. They import the core; the core never imports
them (tests/core/test_layering.py)."""
