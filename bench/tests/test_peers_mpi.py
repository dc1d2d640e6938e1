"""The peers under a real (small) mpiexec: right counts, intact files, memory attributed per rank."""
import subprocess
import sys

import pytest

from harness import common
from harness.rss import TreeSampler

pytestmark = pytest.mark.mpi


def test_mpi_loop_dynamic_and_static_run_every_task_once():
    for mode in ([], ["--static"]):
        r = common.run_json(common.mpi(3, common.peer("mpi_loop.py", "--n", 101, "--batch", 2,
                                                      *mode)), timeout=120)
        assert r["items"] == 101 and r["tasks"] == 51
        assert sum(r["per_worker_tasks"]) == 51 and len(r["per_worker_tasks"]) == 2


def test_pool_futures_times_each_chunksize():
    cmd = common.mpi(3, common.futures_peer("pool_futures.py", "--n", 60, "--chunksize", 1, 8))
    r = common.run_json(cmd, timeout=120)
    assert [run["chunksize"] for run in r["runs"]] == [1, 8]
    assert r["workers"] == 2 and r["items"] == 60


@pytest.mark.parametrize("strategy", ["rank0", "exscan", "ordered"])
def test_mpiio_strategies_write_intact_files(tmp_path, strategy):
    path = tmp_path / "out.txt"
    cmd = common.mpi(4, common.peer("mpiio_write.py", "--strategy", strategy, "--path", path,
                                    "--total-mb", 2, "--block-kb", 64))
    r = common.run_json(cmd, timeout=120)  # the peer checks every row before reporting
    assert r["writers"] == 3 and r["bytes"] >= 2e6 and not path.exists()


def test_tree_sampler_attributes_memory_to_ranks():
    code = "import time; x = bytearray(60 << 20); time.sleep(2)"
    proc = subprocess.Popen(common.mpi(2, [sys.executable, "-c", code]), env=common.peer_env())
    sampler = TreeSampler(proc.pid, interval=0.05)
    sampler.start()
    try:
        proc.wait(timeout=60)
    finally:
        peaks = sampler.stop()
    assert set(peaks["supervisor"]) == {0, 1}
    assert all(mb > 55 for mb in peaks["supervisor"].values())
