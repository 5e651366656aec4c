"""``python -m neurolens.cli`` (as ``python -m neurolens``)."""

from neurolens.cli import main

raise SystemExit(main())
