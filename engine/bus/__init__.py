"""The fleet's message bus: NATS JetStream.

``subjects`` names what goes where (pure); ``settings`` turns ``[bus]`` into connection settings and
credentials (pure); ``buffer`` is the disk buffer of signals the bus has not acknowledged yet;
``connection`` connects (bounded) and creates or updates the streams; ``publisher`` is what the headless
service publishes through; ``consumer`` is what ``tickdeck sink --from nats://`` runs. Only
``connection`` imports nats-py, and only when a bus is configured.
"""
