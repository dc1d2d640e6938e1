"""Workload 6, scale model: measure dispatch costs here, simulate 1k-10k workers with them.

If ``bench/prs_costs.json`` exists (``{"c_msg": s, "c_batch": s}``, prs-mpi's own measured
costs per message and per mini-batch at rank 0), its values replace the ping-pong estimates.
"""
import json

from harness.common import BENCH, PYTHON, WORK, Row, Section, error_of, interleave, mpi, run_json
from harness.settings import Settings

PRS_COSTS = BENCH / "prs_costs.json"
NODE_SIZE = 64


def measured_costs(cfg: Settings) -> tuple[list[dict], Section]:
    cmd = mpi(2, [PYTHON, str(BENCH / "measure_costs.py")])
    records = interleave({"measure_costs": lambda: run_json(cmd, cfg.timeout)}, cfg.reps)
    recs = records["measure_costs"]
    ok = [r for r in recs if "error" not in r]
    section = Section("Scale model: dispatch costs measured here, then a discrete-event "
                      "simulation (bench/scale_model.py)")
    for key, label in (("latency_s", "one-way latency, small pickled message (2 ranks)"),
                       ("c_msg_s", "rank-0 time per request served (1-descriptor reply)"),
                       ("per_desc_s", "rank-0 time per extra descriptor in a reply"),
                       ("pickle_msg_s", "pickle dumps+loads, 1-descriptor message"),
                       ("pickle_per_desc_s", "pickle dumps+loads per extra descriptor")):
        section.rows.append(Row("scale", label, "µs", [r[key] * 1e6 for r in ok], error_of(recs)))
    return ok, section


def model_costs(ok: list[dict], section: Section) -> dict:
    # the least-disturbed repetition: on a real cluster rank 0 has its core to itself
    costs = {k: min(r["model_costs"][k] for r in ok)
             for k in ("c_msg", "c_batch", "latency", "node_latency")}
    if PRS_COSTS.exists():
        plugged = json.loads(PRS_COSTS.read_text())
        costs.update({k: float(v) for k, v in plugged.items()
                      if k in costs or k == "root_c_batch"})
        section.facts.append(f"Costs from {PRS_COSTS.name} replace the estimates: {plugged}.")
    else:
        section.facts.append("c_batch = measured per-descriptor cost + an assumed 5 µs of rank-0 "
                             f"book-keeping per mini-batch; put prs-mpi's measured costs in "
                             f"bench/{PRS_COSTS.name} to replace them.")
    return costs


def run(cfg: Settings) -> Section:
    ok, section = measured_costs(cfg)
    if not ok:
        return section
    costs = model_costs(ok, section)
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "costs.json"
    path.write_text(json.dumps({"model_costs": costs}))
    per_worker = cfg.size(20, 100)
    cmd = [PYTHON, BENCH / "scale_model.py", "--costs", path, "--json",
           "--per-worker", per_worker, "--node-size", 0, NODE_SIZE]
    sim = run_json([str(c) for c in cmd], cfg.timeout)
    from scale_model import format_table  # noqa: PLC0415 - bench/ is on sys.path via run.py

    section.tables.append(format_table(sim["results"]))
    for r in sim["results"]:
        if r["workers"] == 10_000 and abs(r["duration"] - 0.2) < 1e-9:
            section.rows.append(Row("scale", f"predicted efficiency, 10k workers, 200 ms, "
                                             f"{r['topology']}", "%", [r["efficiency"] * 100],
                                    "target >= 90 %"))
    section.facts.append(
        f"Model inputs (fastest repetition of each): c_msg {costs['c_msg'] * 1e6:.1f} µs, c_batch {costs['c_batch'] * 1e6:.1f} µs, "
        f"latency {costs['latency'] * 1e6:.1f} µs; {per_worker} mini-batches per worker, log-normal "
        f"sigma 0.5, prefetch 2, 1 descriptor per request; hierarchical = {NODE_SIZE} workers per "
        "node leader. 'zero-overhead' is the greedy schedule of the same durations with free "
        "dispatch (the tail alone).")
    return section
