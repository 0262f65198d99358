"""The Faust app's start-up tuning: the garbage collector freezes start-up objects."""

from __future__ import annotations


def test_tune_gc_freezes_start_up_objects_and_raises_the_first_threshold():
    import gc

    from router_stream.app import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(50_000)
        assert gc.get_threshold()[0] == 50_000
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
