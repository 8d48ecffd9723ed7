"""Coverage-guided fuzzing (atheris/libFuzzer) of the live feeds' frame decoders.

Run by ``make fuzz``; by hand: ``python -m tests.atheris.fuzz_feeds -max_total_time=60 [corpus_dir]``
(any libFuzzer flag works). The first byte picks the decoder (Binance trades or klines, Coinbase, Yahoo),
the rest is one frame. A frame may be counted as bad or become ticks; any exception is a crash that
libFuzzer reports with the input that caused it. libFuzzer prints the number of inputs run ("Done N
runs") when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import atheris

with atheris.instrument_imports(include=["engine"]):
    import numpy as np

    from engine.feeds.binance import BinanceFeed
    from engine.feeds.coinbase import CoinbaseFeed
    from engine.feeds.yahoo import YahooFeed
    from engine.ticks import SymbolTable

URL = "ws://127.0.0.1:9"


def _check(batch: np.ndarray | None) -> None:
    if batch is not None:
        assert np.isfinite(batch["price"]).all() and (batch["price"] > 0).all()
        assert np.isfinite(batch["size"]).all() and (batch["size"] >= 0).all()
        assert (batch["ts"] >= 0).all()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    kind, frame = data[0] % 4, data[1:]
    if kind == 3:
        yahoo = YahooFeed(SymbolTable(8), ("AAPL", "MSFT"), "http://127.0.0.1:9")
        yahoo._decode(frame, ["AAPL", "MSFT"], 1_700_000_000_000_000_000)
        _check(yahoo.batcher.flush())
        return
    feed: BinanceFeed | CoinbaseFeed
    if kind == 2:
        feed = CoinbaseFeed(SymbolTable(8), URL, ("BTC-USD", "ETH-USD"))
    else:
        stream = "trade" if kind == 0 else "kline_1m"
        feed = BinanceFeed(SymbolTable(8), URL, ("BTCUSDT", "ETHUSDT"), stream=stream)
    raw: str | bytes = frame
    if frame[:1] == b"T":  # as a text frame, when it is one
        with contextlib.suppress(UnicodeDecodeError):
            raw = frame[1:].decode()
    feed._take(raw)
    _check(feed.batcher.flush())


def main() -> None:
    logging.disable(logging.WARNING)  # every input is a new feed, whose first bad message is logged
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
