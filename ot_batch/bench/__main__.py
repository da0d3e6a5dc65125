"""``python -m ot_batch.bench SUITE``: see :mod:`ot_batch.bench`."""
from .cli import main

raise SystemExit(main())
