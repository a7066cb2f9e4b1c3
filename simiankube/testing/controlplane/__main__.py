"""``python -m simiankube.testing.controlplane``: see :mod:`.cli`."""

import sys

from simiankube.testing.controlplane.cli import main

sys.exit(main())
