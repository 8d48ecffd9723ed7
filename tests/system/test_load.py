"""Load, short: the WebSocket broadcast sink with 50 subscribers in another process and 2 more that never
read (the run of ``tickdeck bench --load``, scaled down). Every fast client gets every signal, once and
in order, before and while the slow ones hang; the slow ones are cut off with 1013. Counts, not times.

A client that stops reading is noticed only once the kernel's send buffer for its socket is full (Linux
autotunes it up to ``tcp_wmem``'s maximum, 4 MB by default), then websockets' 32 KiB write buffer, then
the sink's queue (16 frames here). So each signal is followed by a ballast signal of about 8 kB that the
fast clients filter out and the slow ones are sent: they are cut off after a few hundred signals, a few
seconds at 100 a second.
"""

from __future__ import annotations

import asyncio

import numpy as np

from bench.load import run_load

FAST, SLOW = 50, 2


def test_slow_subscribers_are_cut_off_and_every_fast_one_gets_every_signal() -> None:
    run = asyncio.run(run_load(FAST, slow=SLOW, rate=100.0, phase_s=2.0, max_queue=16, procs=1, pad=512,
                               slow_wait_s=60.0))
    assert run.slow_connected == SLOW
    assert run.slow_dropped == SLOW  # both cut off (close 1013), counted by the sink
    assert run.sink["dropped_clients"] == SLOW and run.sink["clients_total"] == FAST + SLOW
    assert run.seq_cut_off > run.first_seq[1]  # signals went out while the slow clients hung
    assert all(n > 0 for n in run.published)
    counts = run.counts()
    assert counts.tolist() == [run.total] * FAST  # every fast client, every signal
    assert run.complete()  # ... each once and in publication order
    assert not run.codes.any()  # no fast client was cut off
    # the fast clients got as much while the slow ones hung as before they came
    during = (run.seq >= run.first_seq[1]) & (run.seq < run.seq_cut_off)
    per_client = np.bincount(run.client[during], minlength=FAST)
    assert per_client.tolist() == [run.seq_cut_off - run.first_seq[1]] * FAST
