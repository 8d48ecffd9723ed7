"""The Yahoo feed's side of history (``engine.backfill``): a loader per feed, started as symbols are
subscribed, and ``fetch``, the request the chart history (``engine.backfill.yahoo``) makes on the feed's
own session, so that it carries the same browser fingerprint, cookie and crumb, and pays like a quote.

A mixin of ``YahooFeed``: the attributes it names are the feed's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from engine.feeds.backoff import Backoff
from engine.feeds.batching import TickBatcher
from engine.feeds.pacing import Clock, RequestBudget, TokenBucket, retry_after
from engine.feeds.yahoo_answer import YahooCounters
from engine.feeds.yahoo_http import Answer, RequestFailed, YahooSession
from engine.ticks import SymbolTable, SymbolTableFull

if TYPE_CHECKING:
    import asyncio

    from engine.backfill.loader import HistoryLoader


class YahooHistoryHooks:
    history: HistoryLoader | None = None
    symbols: SymbolTable
    counters: YahooCounters
    wanted: list[str]
    batcher: TickBatcher
    budget: RequestBudget
    limiter: TokenBucket
    backoff: Backoff
    timeout: float
    _wake: asyncio.Event
    _clock: Clock
    _resume_at: float
    _closed: bool

    def use_history(self, loader: HistoryLoader) -> None:
        """Load each symbol's history with ``loader`` as it is subscribed; its quotes are held meanwhile
        and meet the history by time."""
        self.history = loader
        loader.wake = self._wake.set
        loader.pending = self.batcher.flush

    def _load_history(self, names: Iterable[str]) -> None:
        if self.history is None:
            return
        for name in names:
            with contextlib.suppress(SymbolTableFull):  # (reported when its first quote comes)
                self.symbols.slot(name)
                self.history.start(name)

    async def fetch(self, url: str, params: dict[str, str], limit: int) -> Answer | str:
        """One GET of another Yahoo endpoint (the chart), with the session's cookie and the crumb issued
        for it (a refused crumb is renewed once), paid like a quote (limiter, hourly budget) and held off
        like one; the answer, or why there is none. Its failures are the history's to report: the
        quotes' state is left alone, but a 429 holds every request off, as Yahoo throttles the client."""
        refused: str | None = None
        for _ in range(2):
            if self._closed:
                return "the feed is stopping"
            if self.budget.left == 0:
                return str(self.budget)
            if (wait := self._resume_at - self._clock()) > 0:
                return f"requests to Yahoo held off for {wait:.0f} s"
            if (credentials := await self._credentials(list(self.wanted), refused)) is None:
                return "no crumb from Yahoo"
            crumb, fresh = credentials
            await self.limiter.acquire()
            self.budget.spend()
            self.counters.requests += 1
            try:
                answer = await self._open().request("GET", url, params={**params, "crumb": crumb},
                                                    headers={"Accept": "application/json"}, limit=limit,
                                                    timeout=self.timeout)
            except RequestFailed as exc:
                return exc.reason
            if answer.status == 401 and not fresh and refused is None:
                refused = crumb  # expired: a new cookie and crumb, then once more
                continue
            if answer.status == 429:
                asked = retry_after(answer.retry_after)
                self._resume_at = max(self._resume_at,
                                      self._clock() + (self.backoff.next() if asked is None else asked))
            return answer
        return "Yahoo refused a fresh crumb"

    async def _credentials(self, affected: list[str], refused: str | None) -> tuple[str, bool] | None:
        raise NotImplementedError

    def _open(self) -> YahooSession:
        raise NotImplementedError
