"""``python -m driftline`` is the ``driftline`` command."""

import sys

from driftline.apps.cli import main

sys.exit(main())
