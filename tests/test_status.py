"""status.json writing/reading, `prs-mpi status` rendering and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from prs_mpi import status as st
from prs_mpi.status import load_status, render_status, status_main, write_status


def live_status(now: float, **over) -> dict:
    doc = {"version": 1, "state": "running", "updated": now - 1.0, "started": now - 65.0,
           "interval": 2.0,
           "items": {"total": 200, "done": 50, "succeeded": 47, "failed": 3},
           "mini_batches": {"total": 20, "done": 5, "failed": 1, "in_flight": 3,
                            "listing_done": True},
           "rate_items_per_s": 0.8, "eta_seconds": 187.5,
           "workers": [{"rank": r, "host": f"n{r // 2}", "state": "running", "mini_batch": 5 + r,
                        "since": now - 3.0 * (r + 1),
                        "last_error": "Traceback ...\nValueError: bad row" if r == 2 else None}
                       for r in range(4)],
           "thresholds_left": {"error_threshold": 7, "allowed_failed_count": None}}
    doc.update(over)
    return doc


def final_result(state: str, **over) -> dict:
    doc = {"version": 1, "state": state, "reason": "" if state == "succeeded" else
           "error_threshold 10 exceeded: 12 failed items", "started": 1000.0, "ended": 1010.0,
           "wall_seconds": 10.0, "items": {"total": 100, "succeeded": 88, "failed": 12},
           "mini_batches": {"total": 10, "succeeded": 8, "failed": 2, "retried": 3},
           "throughput_items_per_s": 8.8, "ranks": 4, "workers": 4, "hosts": ["n0", "n1"],
           "output_file": "/x/parallel_run_step.txt", "output_action": "append_row"}
    doc.update(over)
    return doc


def _put(tmp_path, name: str, doc: dict) -> None:
    (tmp_path / name).write_text(json.dumps(doc))


def test_write_status_is_atomic_and_leaves_no_temp(tmp_path):
    path = tmp_path / "status.json"
    write_status(str(path), {"state": "running", "n": 1})
    write_status(str(path), {"state": "running", "n": 2})
    assert json.loads(path.read_text())["n"] == 2
    with pytest.raises(TypeError):
        write_status(str(path), {("tuple", "key"): 1})  # not JSON: the old file must survive
    assert json.loads(path.read_text())["n"] == 2
    assert os.listdir(tmp_path) == ["status.json"]


def test_readers_never_see_a_partial_file_while_another_process_rewrites(tmp_path):
    path = tmp_path / "status.json"
    write_status(str(path), live_status(time.time()))
    code = textwrap.dedent(f"""
        import time
        from prs_mpi.status import write_status
        big = {{"state": "running", "pad": "x" * 200000}}
        end = time.time() + 3
        while time.time() < end:
            big["updated"] = time.time()
            write_status({str(path)!r}, big)
    """)
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=os.getcwd())
    try:
        reads, deadline = 0, time.time() + 2.5
        while time.time() < deadline and writer.poll() is None:
            with open(path) as fh:
                json.load(fh)  # raises on a torn file
            reads += 1
    finally:
        writer.kill()
        writer.wait(timeout=10)
    assert reads > 20


@pytest.mark.parametrize("state,code", [("succeeded", 0), ("failed", 1), ("interrupted", 75)])
def test_exit_codes_of_finished_runs(tmp_path, state, code, capsys):
    _put(tmp_path, "job_result.json", final_result(state))
    _put(tmp_path, "status.json", live_status(time.time()))  # final job_result wins
    assert status_main(str(tmp_path), as_json=False) == code
    out = capsys.readouterr().out
    assert state.upper() in out and "88 succeeded, 12 failed of 100" in out


def test_running_lost_and_missing(tmp_path, capsys):
    assert status_main(str(tmp_path / "nothing"), as_json=False) == 2
    assert "neither job_result.json nor status.json" in capsys.readouterr().err
    now = time.time()
    _put(tmp_path, "status.json", live_status(now))
    assert status_main(str(tmp_path), as_json=False) == 3
    assert "RUNNING" in capsys.readouterr().out
    _put(tmp_path, "status.json", live_status(now, updated=now - 7.0))  # > 3 x 2 s
    assert status_main(str(tmp_path), as_json=True) == 4
    assert json.loads(capsys.readouterr().out)["state"] == "lost"
    loaded = load_status(str(tmp_path))
    assert loaded["state"] == "lost" and loaded["reported_state"] == "running"
    assert "probably killed" in render_status(loaded)


def test_json_output_is_the_loaded_status(tmp_path, capsys):
    now = time.time()
    _put(tmp_path, "status.json", live_status(now))
    assert status_main(str(tmp_path), as_json=True) == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["source"] == "status" and doc["items"]["done"] == 50
    assert doc["output_dir"] == str(tmp_path)


def test_job_result_still_running_defers_to_status_json(tmp_path):
    now = time.time()
    _put(tmp_path, "job_result.json", final_result("running"))
    _put(tmp_path, "status.json", live_status(now))
    assert load_status(str(tmp_path))["source"] == "status"


def test_stopping_counts_as_running_and_can_go_stale(tmp_path):
    now = time.time()
    _put(tmp_path, "status.json", live_status(now, state="stopping"))
    assert status_main(str(tmp_path), as_json=False) == 3
    _put(tmp_path, "status.json", live_status(now, state="stopping", updated=now - 60))
    assert status_main(str(tmp_path), as_json=False) == 4


def test_final_status_json_without_result_is_not_called_lost(tmp_path):
    _put(tmp_path, "status.json", live_status(time.time(), state="succeeded", updated=1.0))
    assert status_main(str(tmp_path), as_json=False) == 0


def test_render_running_shows_counts_rate_eta_workers_thresholds(tmp_path):
    now = 10_000.0
    text = render_status(dict(live_status(now), output_dir="/runs/x"), now=now)
    assert "RUNNING" in text
    assert "50 / 200 (25.0 %)" in text and "47 succeeded, 3 failed" in text
    assert "5 / 20 (25.0 %), 1 failed, 3 in flight" in text
    assert "0.80 items/s" in text and "ETA: 3m08s" in text
    assert "error_threshold 7" in text and "allowed_failed_count off" in text
    worker_lines = [ln for ln in text.splitlines() if ln.strip().startswith(("0 ", "1 ", "2 ",
                                                                             "3 "))]
    assert len(worker_lines) == 4
    assert "ValueError: bad row" in worker_lines[2] and "9.00s" in worker_lines[2]


def test_render_unknown_total_while_listing(tmp_path):
    now = 10_000.0
    doc = live_status(now, items={"total": None, "done": 5, "succeeded": 5, "failed": 0},
                      mini_batches={"total": None, "done": 1, "failed": 0, "in_flight": 2,
                                    "listing_done": False})
    text = render_status(doc, now=now)
    assert "5 (total not known yet)" in text and "still listing inputs" in text


def test_corrupt_status_is_reported_with_a_fix(tmp_path, capsys):
    (tmp_path / "status.json").write_text("{not json")
    assert status_main(str(tmp_path), as_json=False) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_fmt_duration():
    assert [st.fmt_duration(s) for s in (None, 0, 0.0008, 0.042, 3.246, 12.54, 65, 3725, 90000)] == [
        "-", "0s", "0.8ms", "42ms", "3.25s", "12.5s", "1m05s", "1h02m", "1d01h"]


SLOW_WITH_FAILURES = """
import os, time
def run(mini_batch):
    time.sleep(0.4)
    for p in mini_batch:
        if p.endswith(("f00005.txt", "f00017.txt")):
            raise ValueError(f"cannot score {os.path.basename(p)}")
    return [f"{os.path.basename(p)}: 1" for p in mini_batch]
"""


@pytest.mark.mpi
def test_status_report_results_on_a_real_job_from_another_process(jobdir):
    """`prs-mpi status` polled from another process while a real 3-rank job runs, then
    report/results on the finished run; 2 of 12 mini-batches (4 of 24 items) fail."""
    from jobkit import MPIEXEC, PRS
    from prs_mpi.report import build_report

    if MPIEXEC is None:
        pytest.skip("no mpiexec found: pip install mpich (or the project's [mpich] extra)")
    jobdir.files(24)
    jobdir.script(SLOW_WITH_FAILURES)
    job = jobdir.job(mini_batch_size=2, run_max_try=2, status_interval=0.2,
                     resource_monitor_interval=0.2)
    proc = subprocess.Popen([MPIEXEC, "-n", "3", *PRS, "run", str(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    codes, done_seen = [], []
    try:
        deadline = time.time() + 150
        while proc.poll() is None and time.time() < deadline:
            st_proc = subprocess.run([*PRS, "status", "--json", str(jobdir.out)],
                                     capture_output=True, text=True, timeout=60)
            codes.append(st_proc.returncode)
            if st_proc.returncode == 3:
                done_seen.append(json.loads(st_proc.stdout)["items"]["done"])
            time.sleep(0.1)
        output = proc.communicate(timeout=max(1.0, deadline - time.time()))[0]
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 0, output
    assert 3 in codes, f"never saw the job running: status exit codes {codes}"
    assert done_seen == sorted(done_seen), "item counts went backwards while running"
    final = subprocess.run([*PRS, "status", str(jobdir.out)], capture_output=True, text=True,
                           timeout=60)
    assert final.returncode == 0 and "20 succeeded, 4 failed of 24" in final.stdout
    rep = build_report(str(jobdir.out))
    assert rep.items["failed"] == 4 and rep.mini_batches["failed"] == 2
    assert len(rep.failures) == 4  # two mini-batches x two attempts
    assert sum(r.attempts for r in rep.ranks) == 12 + 2 and len(rep.ranks) == 3
    assert all(0 < r.utilisation <= 1 for r in rep.ranks)
    assert not rep.perf.empty and set(rep.perf["rank"]) == {0, 1, 2}
    res = subprocess.run([*PRS, "results", str(jobdir.out), "--to",
                          str(jobdir.root / "r.csv")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert len((jobdir.root / "r.csv").read_text().splitlines()) == 20  # no header: name: value
