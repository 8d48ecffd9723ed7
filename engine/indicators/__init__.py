"""The incremental indicator engine. ``catalogue`` is numba-free; ``bank`` compiles kernels."""
