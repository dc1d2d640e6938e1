"""Harness plumbing: subprocess results and timeouts, the prs-mpi job file and result parsing,
ratios in the report."""
import json
import sys
import time
import tomllib

import psutil
import pytest

from harness import common, prs, report
from harness.common import PeerError, Row, Section


def test_run_json_returns_the_last_json_line_and_the_outer_time():
    code = "print('noise'); print('{\"a\": 1}'); print('{\"a\": 2}')"
    record = common.run_json([sys.executable, "-c", code], timeout=60)
    assert record["a"] == 2 and record["outer_s"] > 0


def test_run_json_reports_exit_code_and_stderr():
    code = "import sys; sys.stderr.write('boom: disk full\\n'); sys.exit(3)"
    with pytest.raises(PeerError, match="exit code 3.*boom: disk full"):
        common.run_json([sys.executable, "-c", code], timeout=60)


def test_run_json_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    code = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    t0 = time.monotonic()
    with pytest.raises(PeerError, match="timed out"):
        common.run_json([sys.executable, "-c", code], timeout=2)
    assert time.monotonic() - t0 < 20
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"


def test_job_toml_is_valid_toml_with_the_runner_keys(tmp_path):
    work = prs.PrsWorkload("w", "noop.py", "/abs/items.txt", mini_batch_size=4,
                           extra={"prefetch": 3})
    job = tomllib.loads(prs.job_toml(work, "none", tmp_path / "out"))
    assert job["entry_script"] == "noop.py" and job["isolation"] == "none"
    assert job["mini_batch_size"] == 4 and job["prefetch"] == 3
    assert job["output_dir"] == str(tmp_path / "out")
    assert job["input"] == {"kind": "file", "paths": ["@/abs/items.txt"]}
    assert job["environment_variables"]["OMP_NUM_THREADS"] == "1"
    glob = prs.PrsWorkload("g", "noop.py", "/data/*")
    assert tomllib.loads(prs.job_toml(glob, "process", tmp_path))["input"]["paths"] == ["/data/*"]


def write_run(out, state="succeeded", attempts=((100.5, 101.0), (100.7, 102.5))):
    (out / "logs" / "sys").mkdir(parents=True)
    result = {"version": 1, "state": state, "reason": "threshold", "started": 100.0,
              "wall_seconds": 3.0, "items": {"total": 10, "succeeded": 10, "failed": 0},
              "mini_batches": {"total": 2}, "throughput_items_per_s": 3.3, "workers": 2}
    (out / "job_result.json").write_text(json.dumps(result))
    rows = ["mini_batch_id,attempt,rank,host,pid,items,succeeded,failed,start,end,run_seconds,"
            "input_seconds,write_seconds,status,error"]
    rows += [f"{i},1,0,h,1,5,5,0,{s},{e},0,0,0,ok," for i, (s, e) in enumerate(attempts)]
    (out / "logs" / "sys" / "processed_mini_batches.csv").write_text("\n".join(rows) + "\n")


def test_parse_result_derives_span_and_first_mini_batch(tmp_path):
    write_run(tmp_path)
    got = prs.parse_result(tmp_path)
    assert got["items"] == 10 and got["wall_seconds"] == 3.0
    assert got["makespan_s"] == pytest.approx(2.0)
    assert got["first_batch_s"] == pytest.approx(0.5)
    assert got["span_items_per_s"] == pytest.approx(5.0)


def test_parse_result_rejects_a_failed_job(tmp_path):
    write_run(tmp_path, state="failed")
    with pytest.raises(PeerError, match="'failed': threshold"):
        prs.parse_result(tmp_path)


def test_run_prs_explains_a_missing_runner(monkeypatch, tmp_path):
    monkeypatch.setattr(prs, "PRS_BIN", tmp_path / "prs-mpi")
    assert "does not exist yet" in prs.prs_missing()
    with pytest.raises(PeerError, match="does not exist yet"):
        prs.run_prs(prs.PrsWorkload("x", "noop.py", "/a.txt"), 2)


def test_report_ratios_and_empty_rows():
    rows = [Row("w", "ref", "tasks/s", [10.0, 30.0, 20.0]),
            Row("w", "new", "tasks/s", [40.0], refs=("ref", "absent")),
            Row("w", "skipped", "tasks/s", [], "skipped: not installed")]
    assert rows[0].median == 20.0
    assert report.ratios(rows[1], rows) == "2.00× ref"
    text = report.table(Section("t", rows))
    assert "| skipped | – |" in text and "10 – 30" in text


def test_interleave_runs_contenders_in_turn_and_drops_failures():
    calls = []

    def ok():
        calls.append("ok")
        return {"v": len(calls)}

    def bad():
        calls.append("bad")
        raise PeerError("exit code 1 from x:\n  why")

    results = common.interleave({"ok": ok, "bad": bad}, reps=3)
    assert calls == ["ok", "bad", "ok", "ok"]
    assert common.samples(results["ok"], "v") == [1, 3, 4]
    assert common.error_of(results["bad"]) == "exit code 1 / why"
