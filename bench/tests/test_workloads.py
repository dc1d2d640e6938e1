"""Entry scripts and the durations generator: deterministic, and decode what they encode."""
import pytest

from workloads import cpu_model, noop, sleep_items, wide_rows
from workloads.durations import lognormal


def test_lognormal_is_seeded_and_has_the_requested_mean():
    a, b = lognormal(20_000, 0.01, seed=3), lognormal(20_000, 0.01, seed=3)
    assert a.seconds == b.seconds
    assert a.seconds != lognormal(20_000, 0.01, seed=4).seconds
    assert a.total / len(a.seconds) == pytest.approx(0.01, rel=0.05)
    assert a.longest > 5 * 0.01  # heavy tail


def test_lower_bound_is_the_larger_of_average_load_and_longest_task():
    d = lognormal(10, 0.1, seed=1)
    assert d.lower_bound(1) == pytest.approx(d.total)
    assert d.lower_bound(1000) == d.longest


def test_item_names_round_trip_through_sleep_items():
    d = lognormal(50, 0.01, seed=7)
    decoded = [sleep_items.item_seconds("/some/dir/" + n) for n in d.item_names()]
    assert decoded == list(d.seconds)
    with pytest.raises(ValueError, match="durations.py"):
        sleep_items.item_seconds("no-duration-here")


def test_cpu_model_is_deterministic_and_reads_ids_from_paths():
    cpu_model.init()
    first = cpu_model.run(["/data/img_00000042.png", "7"])
    cpu_model.init()
    assert cpu_model.run(["/data/img_00000042.png", "7"]) == first
    assert first[0].endswith("," + str(cpu_model.predict(42)))
    assert cpu_model.item_id("/x/img_00000042.png") == 42
    with pytest.raises(ValueError, match="integer id"):
        cpu_model.item_id("/x/readme")


def test_cpu_model_predictions_differ_between_items():
    cpu_model.init()
    assert len({cpu_model.predict(i) for i in range(40)}) > 1


def test_noop_and_wide_rows_return_one_element_per_item():
    assert noop.run(["a", "b"]) == ["a", "b"]
    rows = wide_rows.run(["/d/r000000001-100", "r000000002-4096"])
    assert [len(r) + 1 for r in rows] == [100, 4096]  # + the newline the runner adds
