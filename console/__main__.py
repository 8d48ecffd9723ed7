"""``python -m console`` runs the same entry point as the ``tickdeck`` script."""

from console.cli import main

raise SystemExit(main())
