from nondet.cli import main

raise SystemExit(main())
