"""`python -m training train|eval|export|models ...` (the same as `citywatch train|eval|export|models
...`)."""

from __future__ import annotations

from training.cli import main

raise SystemExit(main())
