"""``python -m flowsd`` runs the command line."""

from flowsd.cli import main

raise SystemExit(main())
