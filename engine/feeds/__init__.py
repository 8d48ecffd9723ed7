"""Market feeds. Every feed yields batches of ``TICK_DTYPE`` ticks and ``FeedStatus`` events through
one async interface (``Feed.stream``), so the runtime never cares which feed is in use."""
