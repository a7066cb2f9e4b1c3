"""`python -m simiankube.cli`: the `simiankube` command."""

import sys

from simiankube.cli import main

sys.exit(main())
