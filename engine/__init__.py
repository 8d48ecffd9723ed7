"""tickdeck's engine: feeds, bar building, incremental indicators and signal detection.

This package is a library shared by the Textual console and the headless service, so it never imports
textual, rich, ``widgets`` or ``console`` (a test checks ``sys.modules``). Heavy modules (numba, pandas)
are imported by the submodules that need them, never here, so that ``tickdeck --help`` stays fast.
"""
