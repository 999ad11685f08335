from autopeft.cli import main

raise SystemExit(main())
