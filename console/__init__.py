"""tickdeck's front ends: the command line (``console.cli``), the Textual app and its commands.

Nothing heavy is imported here, so ``tickdeck --help`` never loads textual, numpy, pandas or numba.
"""
