"""The fleet's message bus: NATS JetStream.

``subjects`` names what goes where (pure); ``settings`` turns ``[bus]`` into connection settings and
credentials (pure); ``buffer`` is the disk buffer of signals the bus has not acknowledged yet;
``connection`` connects (bounded) and creates or updates the streams; ``publisher`` is what the headless
service publishes through; ``consumer`` is what ``tickdeck sink --from nats://`` runs. ``shards`` is the
assignment of symbols to engines (pure), ``sharding`` applies ``--shard`` to a run, ``shard_keeper`` keeps
``--shard auto``'s presence and assignment in the key-value bucket (``presence``: the live engines, from
one watch kept open on it) and ``bus_bars`` reads the bars on the bus back as history. nats-py is imported
only when a bus is configured: by ``connection`` when it connects, and by the consumer, the keeper and the
bar reader inside the calls that use it (``presence`` never: it reads what the keeper passes it).
"""
