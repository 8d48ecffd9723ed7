"""The headless service's feed: the configured feed, wrapped so that a stop request (SIGTERM, SIGINT) ends
its stream cleanly, and so that ``--shard`` lets only the share's symbols through (``only``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable

from engine.feeds.base import Feed, FeedItem


class StoppableFeed(Feed):
    """A feed whose stream ``stop()`` ends: what it yielded before goes through the runtime's queue and
    the engine as usual; then the runtime sees the end of the feed, as at the end of a replay, and
    returns. The wrapped feed is closed (its generator's ``aclose``) without waiting for its next item."""

    def __init__(self, inner: Feed) -> None:
        super().__init__(inner.symbols)
        self.inner = inner
        self.name = inner.name
        self.realtime = inner.realtime
        self.counters = inner.counters
        self.decimals = inner.decimals  # the tick sizes the wrapped feed learns reach the snapshots
        self.previous_closes = inner.previous_closes  # and the previous closes it is told (day P&L)
        self.closed_universe = inner.closed_universe  # a sim's or replay's symbols: others are refused
        self.only: Callable[[FeedItem], FeedItem | None] | None = None
        """What of each item goes on (None: nothing): ``--shard`` keeps the share's symbols."""
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self.stopped = True
        self._stop.set()

    async def stream(self) -> AsyncIterator[FeedItem]:
        inner = self.inner.stream()
        stop = asyncio.create_task(self._stop.wait(), name="tickdeck-feed-stop")
        step: asyncio.Task[FeedItem] | None = None
        try:
            while not self._stop.is_set():
                step = asyncio.create_task(_next(inner), name="tickdeck-feed-next")
                await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():  # stopped while the feed waited or gathered a batch
                    step.cancel()
                    await asyncio.wait({step})
                    done, step = step, None
                    finished = not done.cancelled() and done.exception() is None  # it finished meanwhile
                    if finished and (last := self._only(done.result())) is not None:
                        yield last
                    held = self.inner.take_pending()  # read, not yet handed over
                    if held is not None and (rest := self._only(held)) is not None:
                        yield rest
                    break
                done, step = step, None
                try:
                    item = done.result()
                except StopAsyncIteration:
                    return
                if (kept := self._only(item)) is not None:
                    yield kept
        finally:
            stop.cancel()
            if step is not None and not step.done():
                step.cancel()
                await asyncio.wait({step})
            closer = getattr(inner, "aclose", None)  # an async generator (every feed's stream is one)
            if closer is not None:
                await closer()

    def _only(self, item: FeedItem) -> FeedItem | None:
        return item if self.only is None else self.only(item)

    def universe(self) -> tuple[str, ...]:
        return self.inner.universe()

    def now_ns(self) -> int:
        return self.inner.now_ns()

    async def subscribe(self, symbols: Iterable[str]) -> None:
        await self.inner.subscribe(symbols)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        await self.inner.unsubscribe(symbols)


async def _next(it: AsyncIterator[FeedItem]) -> FeedItem:
    return await it.__anext__()
