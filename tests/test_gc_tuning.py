"""The garbage collector while an app serves, and as it was after (tests start many apps)."""

import gc

from app import gc_tuning


def test_serving_freezes_startup_and_collects_less_often_then_restores() -> None:
    before = gc.get_threshold()
    startup: list[object] = []  # a container alive at startup
    with gc_tuning.tuned_for_serving():
        assert gc.get_threshold()[0] == gc_tuning.GEN0_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0
        assert not any(found is startup for found in gc.get_objects())  # out of sight
        assert gc.collect() >= 0  # collections still run
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert any(found is startup for found in gc.get_objects())
