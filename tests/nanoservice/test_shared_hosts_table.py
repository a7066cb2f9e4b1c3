"""The instances a worker hosts share one hosts table: one copy per instance cost a 500-instance worker 700 MiB."""

from __future__ import annotations

from simiankube.nanoservice import keys
from simiankube.nanoservice.resolver import HostsTable
from tests.nanoservice.conftest import Mesh


def test_instances_of_one_process_share_the_hosts_table(mesh: Mesh) -> None:
    nodes = mesh.load([{"name": "web", "package": "karyon", "count": 2, "dependencies": ["db"]},
                       {"name": "db", "package": "store", "count": 2}])
    launches = [n.launch for n in nodes.values()]
    tables: dict[tuple[str, int], HostsTable] = {}
    apps = [launch.build(tables) for launch in launches]
    [table] = tables.values()
    assert all(app[keys.RESOLVER].table is table for app in apps)
    assert any(host.endswith("-peers") for host in table)
    alone = launches[0].build()  # no cache given: a table of its own, equal content
    assert alone[keys.RESOLVER].table == table and alone[keys.RESOLVER].table is not table
