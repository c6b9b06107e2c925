from gpu_conformance.cli import main

raise SystemExit(main())
