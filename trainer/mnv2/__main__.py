from mnv2.cli import main

raise SystemExit(main())
