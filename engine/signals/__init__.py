"""Signal detection: config rules (``rules``), the events they emit (``events``), and the compiled
detector (``detector``, which imports numpy and numba, so it is not imported here)."""

from engine.signals.events import Signal
from engine.signals.rules import Rule, RuleError, load_rules, parse_rule, required_outputs

__all__ = ["Rule", "RuleError", "Signal", "load_rules", "parse_rule", "required_outputs"]
