"""Benchmarks (``tickdeck bench`` and its ``--feeds``, ``--ui``, ``--history``, ``--store``, ``--soak``,
``--faults`` and ``--load`` runs) and the stand-in servers they and the tests run on 127.0.0.1. Nothing
in the app imports this package: ``console.cli`` reaches it only when ``bench`` is the command."""
