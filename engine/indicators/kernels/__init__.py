"""numba kernels for the indicator catalogue.

Every kind has one step function with the same signature, called by ``engine.indicators.dispatch``:

    step(st, s, b, ip, fp, o, h, l, c, v, t, commit, out, ob) -> None

- ``st``: float64[rows, symbols], the state of every instance, struct-of-arrays (one row per field,
  one column per symbol). A kind owns rows ``b .. b + rows(params)``; an all-zero column is the
  initial (reset) state.
- ``s``: the symbol's column. ``ip``/``fp``: the instance's integer / float parameters.
- ``o h l c v``: the bar; ``t``: its open time in ns since the epoch.
- ``commit``: True when the bar has closed: update ``st`` and write the committed outputs. False for
  the forming bar: write provisional outputs and leave ``st`` untouched.
- ``out``: float64[outputs, symbols]; the kind writes its outputs at rows ``ob ..``. NaN until warm.
"""
