"""Workload 6, scale model: measure prs-mpi's own rank-0 costs here, simulate 1k-10k workers.

MPI per-message and per-Bundle costs come from bench/measure_costs.py (2 ranks, prs-mpi's
Channel/Router and messages), the dispatcher's work per mini-batch from bench/dispatch_costs.py
(the real Dispatcher, journal and csv in-process); bench/scale_model.py simulates flat and with
node leaders (prs_mpi/leader.py).
"""
import json

from harness.common import BENCH, PYTHON, WORK, Row, Section, error_of, interleave, mpi, run_json
from harness.settings import Settings

NODE_SIZE = 64
RELAY_DELAY = 1e-3     # a leader's mean wake-up delay: its idle back-off sleeps up to 2 ms


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
                       ("pickle_per_desc_s", "pickle dumps+loads per extra descriptor"),
                       ("prs_recv_s", "prs-mpi Channel: rank-0 time per message received"),
                       ("prs_send_s", "prs-mpi Channel: rank-0 time per message sent"),
                       ("prs_bundle_s", "prs-mpi Router: rank-0 time per Bundle received (fixed)"),
                       ("prs_bundled_s", "prs-mpi Router: ... plus per message in the Bundle"),
                       ("prs_bundle_send_s", "prs-mpi: rank-0 time per Bundle of 32 sent")):
        section.rows.append(Row("scale", label, "µs", [r[key] * 1e6 for r in ok], error_of(recs)))
    return ok, section


def dispatcher_costs(cfg: Settings, section: Section) -> dict | None:
    """bench/dispatch_costs.py: the real Dispatcher's time per mini-batch, in-process."""
    recs = interleave({"dispatch_costs": lambda: run_json(
        [PYTHON, str(BENCH / "dispatch_costs.py"), "--reps", "3"], cfg.timeout)}, cfg.reps)["dispatch_costs"]
    ok = [r for r in recs if "error" not in r]
    for n in ("1", "16"):
        section.rows.append(Row("scale", f"rank-0 dispatcher work per mini-batch, {n} item(s) (journal, csv "
                                         "row, accounting; no MPI)", "µs",
                                [r["batch_s"][n] * 1e6 for r in ok], error_of(recs)))
    for p in ("64", "10000"):
        section.rows.append(Row("scale", f"rank-0 loop pass with nothing to do, {p} peers", "µs",
                                [r["pass_s"][p] * 1e6 for r in ok], error_of(recs)))
    return min(ok, key=lambda r: r["batch_s"]["1"]) if ok else None


def model_costs(ok: list[dict], logic: dict | None, section: Section) -> dict:
    """The model's inputs from prs-mpi's own figures (fastest repetition: on a cluster rank 0 has
    its core to itself). Per long mini-batch rank 0 receives one Report (asking for the next one,
    carrying the previous Commit) and sends one Offset (carrying the Assign): the model's request
    and reply (bench/dispatch_costs.py, protocol.py); with leaders those ride in Bundles."""
    m = {k: min(r[k] for r in ok) for k in ("latency_s", "prs_recv_s", "prs_send_s", "prs_bundle_s",
                                            "prs_bundled_s", "prs_bundle_send_s", "c_msg_s")}
    work = logic["batch_s"]["1"] if logic else None
    if work is None:
        section.facts.append("bench/dispatch_costs.py failed: its figure is missing from c_batch.")
        work = 0.0
    recv, send = m["prs_recv_s"], m["prs_send_s"]
    send_in_bundle = max(0.0, (m["prs_bundle_send_s"] - send) / 32)   # bundles of 32 were sent
    into = m["prs_bundled_s"]
    costs = {"latency": m["latency_s"], "node_latency": m["latency_s"], "c_msg": recv + send,
             "c_in": recv, "c_out": send, "c_req": 0.0, "c_batch": work,
             "h_c_in": m["prs_bundle_s"], "h_c_out": send, "h_c_req": into + send_in_bundle,
             "h_c_batch": work, "leader_c": recv + send_in_bundle + into + send, "relay_delay": RELAY_DELAY}
    section.facts.append(
        f"Model inputs, µs: dispatcher work per mini-batch {work * 1e6:.1f}; MPI per message received "
        f"{recv * 1e6:.1f} / sent {send * 1e6:.1f}; per Bundle received {m['prs_bundle_s'] * 1e6:.1f} + "
        f"{into * 1e6:.1f} per message in it; per message in a sent Bundle {send_in_bundle * 1e6:.1f}. "
        f"Flat rank-0 cost per long mini-batch (1 message in, 1 out): "
        f"{(costs['c_msg'] + costs['c_batch']) * 1e6:.1f} µs; with leaders "
        f"{(costs['h_c_req'] + costs['h_c_batch']) * 1e6:.1f} µs + one Bundle in/out per leader per pass; "
        f"a leader's relay work {costs['leader_c'] * 1e6:.0f} µs per mini-batch, {RELAY_DELAY * 1e3:g} ms "
        "wake-up delay per hop (its idle back-off).")
    return costs


def run(cfg: Settings) -> Section:
    ok, section = measured_costs(cfg)
    if not ok:
        return section
    costs = model_costs(ok, dispatcher_costs(cfg, section), section)
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
        f"{per_worker} mini-batches per worker, log-normal sigma 0.5, from 50 ms on "
        f"one in reserve (as prs_mpi.worker), 1 descriptor per request; hierarchical = "
        f"{NODE_SIZE} workers per node leader relaying in Bundles (held up to 50 ms unless a worker idles). 'zero-overhead' is the greedy schedule of the same durations "
        "with free dispatch (the tail alone).")
    return section
