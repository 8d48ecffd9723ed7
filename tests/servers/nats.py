"""A real NATS server with JetStream on 127.0.0.1 for the fleet's tests: ``bench.servers.nats`` (shared
with ``tickdeck bench --fleet``) says how it starts, stops and comes back on the same port and store."""

from bench.servers.nats import READY_S, STOP_S, NatsServer, NatsServerError, binary

__all__ = ["READY_S", "STOP_S", "NatsServer", "NatsServerError", "binary"]
