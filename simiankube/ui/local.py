"""`simiankube run FILE --ui`: the live view fed by the local runner's own scrapes."""

from __future__ import annotations

import sys
from typing import Any

from simiankube.localrun.report import Report
from simiankube.localrun.runner import run_architecture
from simiankube.model.spec import Architecture
from simiankube.model.topology import expand
from simiankube.ui.server import serve
from simiankube.ui.view import Live, policy_of_edges


async def run_with_view(arch: Architecture, listen: tuple[str, int], **options: Any) -> Report:
    """Serve the view for the whole run: it opens before the instances start and closes with the report."""
    topology = expand(arch)
    live = Live(topology, "local run (NetworkPolicies are not enforced on loopback)", policy_of_edges(topology))
    async with serve(live, *listen) as url:
        print(f"live view: {url}", file=options.get("progress", sys.stderr), flush=True)
        return await run_architecture(arch, observer=live, **options)
