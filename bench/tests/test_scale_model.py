"""The discrete-event model: no lost work, sane bounds, and costs move efficiency the right way."""
import pytest

import scale_model as sm


def sim(costs: sm.Costs, **kw) -> dict:
    base = dict(workers=200, duration=0.05, per_worker=30, seed=1)
    return sm.simulate(sm.Scenario(**{**base, **kw}), costs)


FREE = sm.Costs(c_msg=0.0, c_batch=0.0, latency=0.0, node_latency=0.0)


@pytest.mark.parametrize("node_size", [0, 16])
def test_free_dispatch_is_close_to_the_greedy_schedule(node_size):
    r = sim(FREE, node_size=node_size)
    assert 0 < r["efficiency"] <= 1
    assert r["efficiency"] == pytest.approx(r["ideal_efficiency"], abs=0.03)


def test_saturated_dispatcher_limits_efficiency():
    # 200 workers / 50 ms = 4000 mini-batches/s; at 1 ms per message and at most
    # ``prefetch`` = 2 descriptors per reply, rank 0 deals at most 2000/s: efficiency <= 0.5.
    r = sim(sm.Costs(c_msg=1e-3, c_batch=0.0, latency=1e-5))
    assert r["root_utilisation"] > 0.9
    assert r["efficiency"] < 0.52


def test_efficiency_falls_as_message_cost_rises():
    effs = [sim(sm.Costs(c_msg=c, c_batch=1e-6, latency=1e-5))["efficiency"]
            for c in (1e-6, 4e-4, 1e-3)]
    assert effs[0] > effs[1] > effs[2]


def test_hierarchy_relieves_a_saturated_rank_zero():
    costs = sm.Costs(c_msg=6e-4, c_batch=1e-6, latency=1e-5, node_latency=1e-5)
    flat = sim(costs)
    tree = sim(costs, node_size=20)
    assert tree["efficiency"] > flat["efficiency"] + 0.2
    assert tree["root_utilisation"] < flat["root_utilisation"]


def test_longer_mini_batches_hide_dispatch_cost():
    costs = sm.Costs(c_msg=1e-4, c_batch=1e-6, latency=1e-5)
    assert sim(costs, duration=1.0)["efficiency"] > sim(costs, duration=0.02)["efficiency"]


def test_load_costs_reads_measure_costs_output(tmp_path):
    path = tmp_path / "costs.json"
    path.write_text('{"latency_s": 1, "model_costs": {"c_msg": 3e-6, "c_batch": 4e-6}}')
    costs = sm.load_costs(str(path), {"latency": 9e-6, "c_batch": None})
    assert (costs.c_msg, costs.c_batch, costs.latency) == (3e-6, 4e-6, 9e-6)


def test_relays_help_only_with_the_per_message_part_of_rank_zeros_cost():
    # 400 workers x 50 ms = 8000 mini-batches/s. Per-MPI-message cost dominant: bundles cut it.
    msg_bound = sm.Costs(c_msg=2e-4, c_batch=1e-6, latency=1e-5, node_latency=1e-5, h_c_in=1e-4, h_c_out=1e-4)
    flat = sim(msg_bound, workers=400)
    tree = sim(msg_bound, workers=400, node_size=50)
    assert tree["efficiency"] > flat["efficiency"] + 0.2
    # per-mini-batch dispatcher work dominant: rank 0 still does it all, relays cannot help
    work_bound = sm.Costs(c_msg=1e-6, c_batch=2.4e-4, latency=1e-5, node_latency=1e-5)
    flat = sim(work_bound, workers=400)
    tree = sim(work_bound, workers=400, node_size=50)
    assert flat["root_utilisation"] > 0.9 and tree["root_utilisation"] > 0.9
    assert abs(tree["efficiency"] - flat["efficiency"]) < 0.1


def test_long_mini_batches_keep_one_in_reserve_like_prs_mpi():
    from prs_mpi.worker import LONG_RUN, Worker
    import inspect
    assert sm.LONG_RUN == LONG_RUN
    assert sm.RESERVE == inspect.signature(Worker).parameters["reserve"].default
    assert sm.Scenario(workers=1, duration=0.2).depth == sm.RESERVE == 1
    assert sm.Scenario(workers=1, duration=0.2, node_size=64).depth == 1
    assert sm.Scenario(workers=1, duration=0.01).depth == 2
    assert sm.Scenario(workers=1, duration=0.2, prefetch=3).depth == 3
