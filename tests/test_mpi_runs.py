"""End-to-end runs under `mpiexec -n N` as a subprocess: output files, exit codes and stderr."""
from __future__ import annotations

import json
import os
import resource
import time

import pytest

from jobkit import ECHO, launch

pytestmark = pytest.mark.mpi

FAIL_EVERY_TENTH = """
import os
def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch if not p.endswith('0.txt')]
"""


def expected_names(n: int) -> list[str]:
    return sorted(f"f{i:05d}.txt" for i in range(n))


SLOW_ECHO = """
import os, time
def run(mini_batch):
    time.sleep(0.02)
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.parametrize("nprocs", [1, 2, 4, 8])
def test_every_item_exactly_once(jobdir, nprocs):
    jobdir.files(61)
    jobdir.script(SLOW_ECHO)
    job = jobdir.job(mini_batch_size=3)
    r = launch(nprocs, ["run", str(job)])
    assert r.returncode == 0, r.output
    assert sorted(jobdir.rows()) == expected_names(61)
    res = jobdir.result()
    assert res["state"] == "succeeded" and res["items"] == {"total": 61, "succeeded": 61, "failed": 0}
    assert res["mini_batches"]["total"] == 21 and res["workers"] == nprocs
    assert "prs-mpi: succeeded: items 61 ok / 0 failed" in r.stderr
    attempts = (jobdir.out / "logs" / "sys" / "processed_mini_batches.csv").read_text().splitlines()
    assert len(attempts) == 1 + 21
    if nprocs > 1:   # work was spread over ranks
        ranks = {line.split(",")[2] for line in attempts[1:]}
        assert len(ranks) > 1


def test_without_mpiexec_and_python_m(jobdir):
    jobdir.files(5)
    jobdir.script(ECHO)
    r = launch(None, [str(jobdir.job())])
    assert r.returncode == 0, r.output
    assert sorted(jobdir.rows()) == expected_names(5)


@pytest.mark.parametrize("threshold,code", [(6, 0), (5, 1)])
def test_error_threshold_boundary_with_partial_returns(jobdir, threshold, code):
    jobdir.files(60)
    jobdir.script(FAIL_EVERY_TENTH)
    r = launch(4, ["run", str(jobdir.job(mini_batch_size=4, error_threshold=threshold))])
    assert r.returncode == code, r.output
    res = jobdir.result()
    if code == 0:
        assert res["items"] == {"total": 60, "succeeded": 54, "failed": 6}
        assert sorted(jobdir.rows()) == [n for n in expected_names(60) if not n.endswith("0.txt")]
    else:
        assert res["state"] == "failed" and "error_threshold exceeded" in res["reason"]
        assert "error_threshold exceeded" in r.stderr
        assert res["items"]["failed"] == 6   # counted exactly, as in ParallelRunStep


RAISE_ON = """
import os
def run(mini_batch):
    for p in mini_batch:
        if os.path.basename(p) in {bad}:
            raise ValueError('corrupt record in ' + os.path.basename(p))
    return [os.path.basename(p) for p in mini_batch]
"""


def test_failing_batches_are_retried_elsewhere_then_counted(jobdir):
    jobdir.files(20)
    jobdir.script(RAISE_ON.format(bad="{'f00003.txt', 'f00011.txt'}"))
    r = launch(4, ["run", str(jobdir.job(mini_batch_size=2, run_max_try=3, allowed_failed_count=2))])
    assert r.returncode == 0, r.output
    res = jobdir.result()
    assert res["mini_batches"]["failed"] == 2 and res["mini_batches"]["retried"] == 4
    assert res["items"] == {"total": 20, "succeeded": 16, "failed": 4}
    csv_rows = [line.split(",") for line in
                (jobdir.out / "logs" / "sys" / "processed_mini_batches.csv").read_text().splitlines()[1:]]
    tries = [(row[0], row[2]) for row in csv_rows if row[13] == "failed"]
    assert len(tries) == 6
    for bid in {t[0] for t in tries}:
        assert len({rank for b, rank in tries if b == bid}) == 3   # three different ranks
    errors = (jobdir.out / "logs" / "job_error.txt").read_text()
    assert "ValueError: corrupt record in f00003.txt" in errors and "Traceback" in errors


def test_allowed_failed_count_exceeded_stops_promptly(jobdir):
    jobdir.files(40)
    jobdir.script(RAISE_ON.format(bad="{'f00003.txt', 'f00011.txt', 'f00021.txt'}"))
    r = launch(4, ["run", str(jobdir.job(mini_batch_size=2, run_max_try=1, allowed_failed_count=2))])
    assert r.returncode == 1
    assert "allowed_failed_count exceeded: 3 mini-batches failed" in r.stderr
    rows = jobdir.rows()
    assert len(rows) == len(set(rows))          # whatever was committed is there once


SEGV = """
import ctypes, os
def run(mini_batch):
    if any(p.endswith('f00007.txt') for p in mini_batch):
        ctypes.string_at(0)
    return [os.path.basename(p) for p in mini_batch]
"""


def test_segfault_in_user_code_does_not_end_the_job(jobdir):
    jobdir.files(30)
    jobdir.script(SEGV)
    r = launch(4, ["run", str(jobdir.job(mini_batch_size=3, run_max_try=2))])
    assert r.returncode == 0, r.output
    res = jobdir.result()
    assert res["mini_batches"]["failed"] == 1 and res["items"]["failed"] == 3
    assert sorted(jobdir.rows()) == [n for n in expected_names(30) if n not in {"f00006.txt", "f00007.txt",
                                                                                "f00008.txt"}]
    assert "SIGSEGV" in (jobdir.out / "logs" / "job_error.txt").read_text()


HANG = """
import ctypes, os, time
def run(mini_batch):
    for p in mini_batch:
        if p.endswith('f00004.txt'):
            while True: pass
        if p.endswith('f00009.txt'):
            ctypes.CDLL(None).sleep(1000)
    return [os.path.basename(p) for p in mini_batch]
"""


def test_timeouts_in_python_and_native_code(jobdir):
    jobdir.files(12)
    jobdir.script(HANG)
    t0 = time.monotonic()
    r = launch(3, ["run", str(jobdir.job(mini_batch_size=1, run_max_try=1, run_invocation_timeout=2))])
    assert r.returncode == 0, r.output
    assert time.monotonic() - t0 < 60
    res = jobdir.result()
    assert res["mini_batches"]["failed"] == 2 and res["items"]["succeeded"] == 10
    errors = (jobdir.out / "logs" / "job_error.txt").read_text()
    assert errors.count("run_invocation_timeout=2s") >= 2


FRAME = """
import os
import pandas as pd
def run(mini_batch, context):
    names = [os.path.basename(p) for p in mini_batch]
    return pd.DataFrame({"file": names, "batch": context.mini_batch_id, "note": ["a,b"] * len(names)})
"""


def test_dataframe_rows_are_csv_with_one_header(jobdir):
    import pandas as pd
    jobdir.files(25)
    jobdir.script(FRAME)
    r = launch(4, ["run", str(jobdir.job(mini_batch_size=2))])
    assert r.returncode == 0, r.output
    lines = jobdir.rows()
    assert lines[0] == "file,batch,note" and lines.count("file,batch,note") == 1
    df = pd.read_csv(jobdir.out / "parallel_run_step.txt")
    assert sorted(df.file) == expected_names(25) and set(df.note) == {"a,b"}
    assert all(df.batch == df.file.map(lambda f: int(f[1:6]) // 2))


def test_set_and_input_override_single_image_one_process(jobdir):
    jobdir.files(10)
    jobdir.script(ECHO)
    job = jobdir.job(mini_batch_size=5, process_count_per_node=4)
    r = launch(1, ["run", str(job), "--input", "data/f00003.txt", "--set", "mini_batch_size=1",
                   "--set", "process_count_per_node=1", "--set", "append_row_file_name='single.txt'"],
               cwd=str(jobdir.root))
    assert r.returncode == 0, r.output
    assert jobdir.rows("single.txt") == ["f00003.txt"]


def test_bad_job_file_is_one_clear_line(jobdir):
    jobdir.files(3)
    jobdir.script(ECHO)
    r = launch(4, ["run", str(jobdir.job(mini_bacth_size=2))])
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("prs-mpi: error:")]
    assert len(errors) == 1 and "did you mean 'mini_batch_size'" in errors[0]
    assert not jobdir.out.exists()


@pytest.mark.parametrize("launcher_rank", ["0", "1"])
def test_mpi4py_linked_to_another_mpi_than_the_launcher(jobdir, launcher_rank):
    """mpiexec of one MPI, mpi4py loading another: each process would be a singleton running the
    whole job. Simulated with Open MPI's launcher variables around an MPICH singleton."""
    jobdir.files(3)
    jobdir.script(ECHO)
    env = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": launcher_rank}
    r = launch(None, ["run", str(jobdir.job())], env=env)
    assert r.returncode == 2
    if launcher_rank == "0":
        assert r.stderr.count("prs-mpi: error:") == 1
        assert "started 2 processes (OMPI_COMM_WORLD_SIZE=2) but MPI here sees a world of 1" in r.stderr
        assert "MPI4PY_LIBMPI" in r.stderr
    else:
        assert "prs-mpi: error:" not in r.stderr
    assert not jobdir.out.exists()


def test_input_matching_nothing(jobdir):
    jobdir.script(ECHO)
    r = launch(2, ["run", str(jobdir.job(input_paths=["data/*.png"]))])
    assert r.returncode == 2
    assert "data/*.png" in r.stderr and r.stderr.count("prs-mpi: error:") == 1


INIT_FAILS = """
import os, time
def init():
    if os.environ['PRS_MPI_RANK'] in {ranks}:
        raise RuntimeError('cannot load model on rank ' + os.environ['PRS_MPI_RANK'])
def run(mini_batch):
    time.sleep(0.1)
    return [os.path.basename(p) + ' rank ' + os.environ['PRS_MPI_RANK'] for p in mini_batch]
"""


def test_init_failing_everywhere_stops_with_the_traceback(jobdir):
    jobdir.files(10)
    jobdir.script(INIT_FAILS.format(ranks="{'0', '1', '2'}"))
    t0 = time.monotonic()
    r = launch(3, ["run", str(jobdir.job(init_max_try=2))])
    assert r.returncode == 1
    assert time.monotonic() - t0 < 60
    assert "every worker left the job" in r.stderr and "RuntimeError: cannot load model on rank" in r.stderr


def test_init_failing_on_some_ranks_others_carry_on(jobdir):
    jobdir.files(20)
    jobdir.script(INIT_FAILS.format(ranks="{'1', '2'}"))
    r = launch(4, ["run", str(jobdir.job(mini_batch_size=2, init_max_try=2))])
    assert r.returncode == 0, r.output
    rows = jobdir.rows()
    assert sorted(row.split()[0] for row in rows) == expected_names(20)
    assert {row.split()[-1] for row in rows} <= {"0", "3"}
    assert "rank 1" in (jobdir.out / "logs" / "job_error.txt").read_text()


def test_isolation_none_runs_in_the_ranks(jobdir):
    jobdir.files(20)
    jobdir.script("""
import os
def run(mini_batch):
    return [f"{os.path.basename(p)} {os.getpid()}" for p in mini_batch]
""")
    r = launch(3, ["run", str(jobdir.job(mini_batch_size=2, isolation="none"))])
    assert r.returncode == 0, r.output
    assert jobdir.result()["workers"] == 2        # rank 0 only dispatches
    assert sorted(x.split()[0] for x in jobdir.rows()) == expected_names(20)


def test_summary_only_writes_no_append_file(jobdir):
    jobdir.files(9)
    jobdir.script("""
import os
from prs_mpi import EntryScript
def run(mini_batch):
    out = EntryScript().output_dir
    for p in mini_batch:
        open(os.path.join(out, os.path.basename(p) + '.done'), 'w').close()
    return mini_batch
""")
    r = launch(2, ["run", str(jobdir.job(output_action="summary_only", mini_batch_size=2))])
    assert r.returncode == 0, r.output
    assert not (jobdir.out / "parallel_run_step.txt").exists()
    assert len(list(jobdir.out.glob("*.done"))) == 9
    assert jobdir.result()["items"]["succeeded"] == 9


def test_unfinished_run_needs_resume(jobdir):
    jobdir.files(4)
    jobdir.script(ECHO)
    job = jobdir.job()
    state = jobdir.out / ".prs"
    state.mkdir(parents=True)
    (state / "journal.jsonl").write_text(json.dumps({"t": "begin", "run": "x", "fingerprint": "y", "mode": "fresh"})
                                         + "\n")
    r = launch(2, ["run", str(job)])
    assert r.returncode == 2 and "holds an unfinished run" in r.stderr and "--resume" in r.stderr


def test_unhandled_error_on_a_rank_ends_the_job(jobdir):
    jobdir.files(40)
    jobdir.script(SLOW_ECHO.replace("0.02", "0.2"))
    t0 = time.monotonic()
    r = launch(4, ["run", str(jobdir.job(mini_batch_size=1))], env={"PRS_MPI_INJECT": "raise-on-rank=2"},
               timeout=120)
    assert r.returncode != 0
    assert time.monotonic() - t0 < 60
    assert "rank 2" in r.stderr and "injected fault" in r.stderr


SLEEPER = """
import os, time
def run(mini_batch):
    time.sleep(0.5)
    return [os.path.basename(p) for p in mini_batch]
"""


def test_idle_ranks_do_not_busy_spin(jobdir):
    """8 ranks on this machine's cores, user code only sleeps: the job must leave the CPUs mostly idle."""
    jobdir.files(64)
    jobdir.script(SLEEPER)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = launch(8, ["run", str(jobdir.job(mini_batch_size=1))])
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert r.returncode == 0, r.output
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    capacity = wall * (os.cpu_count() or 1)
    assert cpu < 0.5 * capacity, f"{cpu:.1f}s CPU in {wall:.1f}s wall on {os.cpu_count()} cores"


def test_parquet_output_dataset_and_resume_cut(jobdir):
    import pandas as pd
    jobdir.files(30)
    jobdir.script(FRAME)
    r = launch(3, ["run", str(jobdir.job(mini_batch_size=4, append_row_format="parquet", flush_interval=0.0))])
    assert r.returncode == 0, r.output
    dataset = jobdir.out / "parallel_run_step.parquet"
    parts = sorted(dataset.glob("part-*.parquet"))
    assert len(parts) >= 2 and not list(dataset.glob("*.tmp"))
    df = pd.read_parquet(dataset)          # a valid Parquet dataset, read as one
    assert sorted(df.file) == expected_names(30) and list(df.columns) == ["file", "batch", "note"]
    res = launch(None, ["results", str(jobdir.out), "--head", "5"])
    assert res.returncode == 0 and "file" in res.stdout
    # a part past the last commit (a crash mid-flush) is removed on --resume
    from prs_mpi.writer import cut_parquet_parts
    stray = dataset / "part-9999999999999999.parquet"
    stray.write_bytes(parts[0].read_bytes())
    (dataset / "part-0000000000000001.parquet.tmp").write_bytes(b"torn")
    cut_parquet_parts(str(dataset), 10**12)
    assert not stray.exists() and not list(dataset.glob("*.tmp")) and all(p.exists() for p in parts)
