"""`python -m modelhub_client ...` runs the `modelhub` command line."""

from modelhub_client.cli import main

raise SystemExit(main())
