from neurolens.cli import main

raise SystemExit(main())
