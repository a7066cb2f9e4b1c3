"""Render pauses the cyclic garbage collector (half its time at 10,000 services) and always restores it; what it
built goes to the oldest generation, so no young collection walks it all at once afterwards."""

from __future__ import annotations

import gc
import weakref

import pytest

from simiankube.model.collector import cyclic_gc_paused


def test_collector_is_paused_inside_and_restored_after() -> None:
    assert gc.isenabled()
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), cyclic_gc_paused():
        raise RuntimeError("a render that fails")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with cyclic_gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_what_was_built_is_old_and_nothing_stays_frozen() -> None:
    with cyclic_gc_paused():
        built = [[index] for index in range(10_000)]
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert id(built) in oldest and id(built[-1]) in oldest
    assert not {id(o) for o in gc.get_objects(generation=0)} & {id(item) for item in built}
    assert gc.get_freeze_count() == 0


class Node:
    other: object = None


def test_a_cycle_dropped_during_the_pause_is_still_collected() -> None:
    with cyclic_gc_paused():
        node = Node()
        node.other = node
        ref = weakref.ref(node)
        del node
    assert ref() is not None
    gc.collect()
    assert ref() is None


def test_reading_and_validating_pause_the_collector_and_restore_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from simiankube.model import spec

    seen: list[bool] = []
    real = spec.parse_spec

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(spec, "parse_spec", spy)
    arch = spec.parse_text('{"arch": "a", "services": [{"name": "s", "package": "store", "count": 1}]}')
    assert arch.services[0].name == "s"
    assert seen == [False] and gc.isenabled()
    with pytest.raises(spec.SpecError, match="services"):
        spec.parse_text('{"arch": "a", "services": []}')
    assert gc.isenabled()
