"""Where signals go besides the screen: the sink interface and its filter (``base``), the JSON lines
sinks (``jsonl``) and the ``[[sinks]]`` config tables (``config``). Pure Python: no numpy, no UI."""

from engine.sinks.base import SignalFilter, Sink, SinkGroup
from engine.sinks.config import SinkError, SinkSpec, build_sinks, load_sinks

__all__ = ["SignalFilter", "Sink", "SinkError", "SinkGroup", "SinkSpec", "build_sinks", "load_sinks"]
