"""Unit tests for prs_mpi.placement: faked topologies, faked SLURM_* / CUDA_* variables."""

import itertools
import os
import stat

import psutil
import pytest

from prs_mpi import placement as pl
from prs_mpi.placement import PlacementConfig, PlacementError, Topology, plan, plan_node


def node(local_size, cpus, gpus=(), cfg=PlacementConfig(), env=None, host="n1"):
    return plan_node(host, local_size, tuple(cpus), tuple(gpus), cfg, env or {})


# ---------------------------------------------------------------- CPUs

@pytest.mark.parametrize("ncpus,nworkers", [(8, 8), (8, 4), (10, 4), (16, 3), (7, 7), (64, 5)])
def test_even_split_is_disjoint_and_covers_the_cpuset(ncpus, nworkers):
    plans = node(nworkers, range(ncpus))
    sets = [set(p.cpus) for p in plans]
    assert all(sets), "every worker gets at least one core"
    assert sum(map(len, sets)) == ncpus and set().union(*sets) == set(range(ncpus))
    assert max(map(len, sets)) - min(map(len, sets)) <= 1
    assert not any(p.cpus_shared for p in plans)
    for p in plans:  # blocks are contiguous
        assert list(p.cpus) == list(range(p.cpus[0], p.cpus[-1] + 1))


def test_split_stays_inside_a_noncontiguous_cpuset():
    cpuset = (2, 3, 6, 7, 12, 13)
    plans = node(3, cpuset)
    assert [p.cpus for p in plans] == [(2, 3), (6, 7), (12, 13)]


def test_fixed_cpus_per_worker():
    plans = node(2, range(8), cfg=PlacementConfig(cpus_per_worker=3))
    assert [p.cpus for p in plans] == [(0, 1, 2), (3, 4, 5)]
    assert plans[0].env["OMP_NUM_THREADS"] == "3"


def test_more_workers_than_cores_share_round_robin_and_say_so():
    plans = node(8, (0, 1))
    assert [p.cpus for p in plans] == [(0,), (1,)] * 4
    assert all(p.cpus_shared for p in plans)
    assert all("shared round-robin" in " ".join(p.notes) for p in plans)
    assert all(p.env["OMP_NUM_THREADS"] == "1" for p in plans)


def test_oversubscribed_fixed_width_wraps_and_balances():
    plans = node(4, range(8), cfg=PlacementConfig(cpus_per_worker=3))
    counts = {c: sum(c in p.cpus for p in plans) for c in range(8)}
    assert all(len(p.cpus) == 3 and set(p.cpus) <= set(range(8)) for p in plans)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert all(p.cpus_shared for p in plans)


def test_cpus_per_worker_larger_than_cpuset_is_capped():
    (p,) = node(1, (0, 1), cfg=PlacementConfig(cpus_per_worker=5))
    assert p.cpus == (0, 1)


def test_srun_cpus_per_task_wins_over_sbatch_value():
    env = {"SLURM_CPUS_PER_TASK": "4", "SRUN_CPUS_PER_TASK": "2"}
    plans = node(4, range(16), env=env)
    assert [p.cpus for p in plans] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    plans = node(4, range(16), env={"SLURM_CPUS_PER_TASK": "4"})
    assert plans[3].cpus == (12, 13, 14, 15)


def test_job_file_cpus_per_worker_beats_slurm():
    plans = node(2, range(8), cfg=PlacementConfig(cpus_per_worker=1),
                 env={"SRUN_CPUS_PER_TASK": "4"})
    assert [p.cpus for p in plans] == [(0,), (1,)]


def test_cpuset_bound_per_task_by_srun_is_used_whole():
    env = {"SLURM_STEP_ID": "0", "SLURM_CPU_BIND_TYPE": "mask_cpu:", "SLURM_LOCALID": "3"}
    p = plan(3, Topology("n1", 3, 4, (6, 7), ()), PlacementConfig(), env)
    assert p.cpus == (6, 7) and not p.cpus_shared
    env = {"SLURM_STEP_ID": "0", "SRUN_CPUS_PER_TASK": "2"}  # cpuset == cpus-per-task
    assert plan(3, Topology("n1", 3, 4, (6, 7), ()), PlacementConfig(), env).cpus == (6, 7)
    # the same cpuset without Slurm's binding is split between the node's workers
    assert plan(1, Topology("n1", 1, 2, (6, 7), ()), PlacementConfig(), {}).cpus == (7,)


def test_cpu_bind_none_still_splits():
    env = {"SLURM_STEP_ID": "0", "SLURM_CPU_BIND_TYPE": "none"}
    assert plan(1, Topology("n1", 1, 2, (0, 1, 2, 3), ()), PlacementConfig(), env).cpus == (2, 3)


def test_user_thread_settings_are_not_overridden():
    (p,) = node(1, range(4), env={"OMP_NUM_THREADS": "7"})
    assert "OMP_NUM_THREADS" not in p.env
    assert p.env["MKL_NUM_THREADS"] == "4"


# ---------------------------------------------------------------- GPUs

def test_round_robin_gpus_with_more_workers_than_gpus():
    plans = node(8, range(8), gpus=("0", "1"))
    assert [p.gpus for p in plans] == [("0",), ("1",)] * 4
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "1"] * 4
    assert all(p.gpus_shared and p.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" for p in plans)


def test_one_worker_per_gpu_is_exclusive_and_not_shared():
    plans = node(4, range(8), gpus=("0", "1", "2", "3"))
    assert [p.gpus for p in plans] == [("0",), ("1",), ("2",), ("3",)]
    assert not any(p.gpus_shared for p in plans)


def test_gpus_per_worker_two():
    plans = node(2, range(8), gpus=("0", "1", "2", "3"), cfg=PlacementConfig(gpus_per_worker=2))
    assert [p.gpus for p in plans] == [("0", "1"), ("2", "3")]
    assert plans[1].env["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_exclusive_extra_workers_run_on_cpu():
    plans = node(3, range(6), gpus=("0", "1"), cfg=PlacementConfig(gpu_sharing="exclusive"))
    assert [p.gpus for p in plans] == [("0",), ("1",), ()]
    assert plans[2].env["CUDA_VISIBLE_DEVICES"] == ""
    assert "running on CPU" in " ".join(plans[2].notes)


def test_device_gpu_fails_clearly_without_a_gpu():
    with pytest.raises(PlacementError, match="no GPU found.*gpus-per-node"):
        node(1, range(2), cfg=PlacementConfig(device="gpu"))
    with pytest.raises(PlacementError, match="exclusive.*round_robin"):
        node(3, range(6), gpus=("0", "1"),
             cfg=PlacementConfig(device="gpu", gpu_sharing="exclusive"))


def test_auto_without_gpu_and_device_cpu_hide_every_gpu():
    (p,) = node(1, range(2))
    assert p.gpus == () and p.env["CUDA_VISIBLE_DEVICES"] == "" and "no GPU found" in p.notes[0]
    plans = node(2, range(2), gpus=("0", "1"), cfg=PlacementConfig(device="cpu"))
    assert all(p.gpus == () and p.env["CUDA_VISIBLE_DEVICES"] == "" for p in plans)


@pytest.mark.parametrize("var", ["CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"])
def test_gpus_are_never_widened_beyond_the_environment(var):
    plans = node(4, range(8), gpus=("0", "1", "2", "3"), env={var: "2,3"})
    assert {g for p in plans for g in p.gpus} == {"2", "3"}


def test_empty_cuda_visible_devices_means_no_gpu():
    (p,) = node(1, range(2), gpus=("0",), env={"CUDA_VISIBLE_DEVICES": ""})
    assert p.gpus == ()


def test_gpus_bound_per_task_by_slurm_are_used_as_given():
    env = {"SLURM_GPUS_PER_TASK": "1", "CUDA_VISIBLE_DEVICES": "3"}
    p = plan(5, Topology("n1", 3, 4, tuple(range(8)), ("3",)), PlacementConfig(
        gpu_sharing="exclusive"), env)
    assert p.gpus == ("3",) and not p.gpus_shared


# ---------------------------------------------------------------- invariants and errors

def test_plans_are_disjoint_whenever_resources_suffice():
    for ncpu, ngpu, workers, k in itertools.product((1, 2, 6, 13), (0, 1, 4), (1, 2, 3, 6), (1, 2)):
        cfg = PlacementConfig(gpus_per_worker=k)
        plans = node(workers, range(ncpu), gpus=[str(i) for i in range(ngpu)], cfg=cfg)
        cpus = [c for p in plans for c in p.cpus]
        gpus = [g for p in plans for g in p.gpus]
        assert all(p.cpus for p in plans)
        assert (len(cpus) == len(set(cpus))) == (workers <= ncpu)
        if workers * k <= ngpu:
            assert len(gpus) == len(set(gpus)) == workers * k
        assert [p.rank for p in plans] == list(range(workers))


@pytest.mark.parametrize("kwargs,match", [
    ({"device": "tpu"}, "device"), ({"gpu_sharing": "fair"}, "gpu_sharing"),
    ({"gpus_per_worker": 0}, "gpus_per_worker"), ({"cpus_per_worker": -1}, "cpus_per_worker")])
def test_config_validation_names_the_key(kwargs, match):
    with pytest.raises(PlacementError, match=match):
        PlacementConfig(**kwargs)


def test_local_rank_outside_the_node_is_an_error():
    with pytest.raises(PlacementError, match="local rank 4"):
        plan(4, Topology("n1", 4, 4, (0, 1), ()), PlacementConfig(), {})


def test_format_plan_table():
    plans = node(8, (0, 1), gpus=("0",)) + plan_node("n2", 2, range(8), (), PlacementConfig(),
                                                     {}, first_rank=8)
    lines = pl.format_plan(plans).splitlines()
    assert lines[0].split()[:5] == ["rank", "host", "local", "cores", "gpu"]
    assert len(lines) == 1 + len(plans)  # no note is common to both nodes
    assert lines[-1].split()[:4] == ["9", "n2", "1", "4-7"]
    assert lines[-1].split()[4:] == ["-", "no", "GPU", "found:", "running", "on", "CPU"]
    assert "(shared)" in lines[1] and "shared round-robin" in lines[1]
    assert pl.format_cpus([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and pl.format_cpus([]) == "-"


def test_format_plan_prints_common_notes_once():
    lines = pl.format_plan(node(4, (0, 1))).splitlines()
    assert len(lines) == 1 + 4 + 2
    assert lines[-2].startswith("note: 4 workers x 1 core(s) on 2 core(s)")
    assert lines[-1] == "note: no GPU found: running on CPU"
    assert not any("note" in ln for ln in lines[1:5])
    one = pl.format_plan(node(4, (0, 1))[3:]).splitlines()  # a single rank keeps its notes
    assert len(one) == 2 and one[1].split()[:3] == ["3", "n1", "3"] and "no GPU" in one[1]


# ---------------------------------------------------------------- discovery

def fake(result):
    def probe():
        if isinstance(result, Exception):
            raise result
        return result
    return probe


GPUS = [("0", "GPU-aaa"), ("1", "GPU-bbb"), ("2", "GPU-ccc")]


def test_discover_gpus_none_found_never_raises():
    assert pl.discover_gpus({}, probes=[fake(RuntimeError("no driver")), fake([])]) == ()


def test_discover_gpus_falls_back_to_next_probe_and_honours_cvd():
    probes = [fake(ImportError("no pynvml")), fake(GPUS)]
    assert pl.discover_gpus({}, probes) == ("0", "1", "2")
    assert pl.discover_gpus({"CUDA_VISIBLE_DEVICES": "GPU-bbb,2"}, probes) == ("GPU-bbb", "2")
    assert pl.discover_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, probes) == ()
    assert pl.discover_gpus({"SLURM_JOB_GPUS": "1,7"}, probes) == ("1",)


def test_smi_probe_parses_nvidia_smi(tmp_path, monkeypatch):
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\nprintf '0, GPU-aaa\\n1, GPU-bbb\\n'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert pl._smi_probe() == [("0", "GPU-aaa"), ("1", "GPU-bbb")]
    assert pl.discover_gpus({"CUDA_VISIBLE_DEVICES": "1"}, probes=[pl._smi_probe]) == ("1",)


def test_local_topology_reads_cpuset_and_launcher_env():
    env = {"SLURM_LOCALID": "2", "SLURM_TASKS_PER_NODE": "4(x2),3", "SLURM_NODEID": "2"}
    topo = pl.local_topology(None, None, env, probes=[fake([])])
    assert topo.local_rank == 2 and topo.local_size == 3
    assert topo.cpus == tuple(sorted(psutil.Process().cpu_affinity())) and topo.gpus == ()
    assert pl.local_topology(1, 8, {"MPI_LOCALRANKID": "5"}, probes=[fake([])]).local_rank == 1


# ---------------------------------------------------------------- Slurm allocation

@pytest.mark.parametrize("spec,expected", [
    ("4(x2),3", [4, 4, 3]), ("8", [8]), ("2,1(x3)", [2, 1, 1, 1]), ("", [])])
def test_expand_counts(spec, expected):
    assert pl.expand_counts(spec) == expected


def test_expand_counts_rejects_garbage():
    with pytest.raises(ValueError, match="4x2"):
        pl.expand_counts("4x2")


def test_allocation_from_env_and_mismatches():
    env = {"SLURM_JOB_ID": "42", "SLURM_NNODES": "3", "SLURM_TASKS_PER_NODE": "4(x2),3",
           "SLURM_CPUS_PER_TASK": "2", "SLURM_RESTART_COUNT": "1"}
    alloc = pl.allocation_from_env(env)
    assert alloc["under_slurm"] and alloc["job_id"] == "42" and alloc["nodes"] == 3
    assert alloc["tasks_per_node"] == [4, 4, 3] and alloc["ntasks_per_node"] is None
    assert alloc["cpus_per_task"] == 2 and alloc["restart_count"] == 1
    msgs = pl.allocation_mismatches(alloc, node_count=2, process_count_per_node=4)
    assert len(msgs) == 2
    assert "node_count = 2" in msgs[0] and "3 node(s)" in msgs[0]
    assert "4/4/3" in msgs[1] and "--ntasks-per-node=4" in msgs[1]
    ok = pl.allocation_from_env({"SLURM_JOB_ID": "7", "SLURM_NNODES": "1",
                                 "SLURM_TASKS_PER_NODE": "8"})
    assert ok["ntasks_per_node"] == 8
    assert pl.allocation_mismatches(ok, 1, 8) == []
    assert pl.allocation_mismatches(pl.allocation_from_env({}), 4, 4) == []
