"""ResourceMonitor: rows in logs/perf/rank<N>.csv, cheap when not due, GPU via NVML/nvidia-smi."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types

import pandas as pd
import pytest

from prs_mpi import monitor
from prs_mpi.monitor import FIELDS, ResourceMonitor

CHILD = """
import os, sys, time
blob = bytearray(60 * 2**20)           # ~60 MiB resident
for i in range(0, len(blob), 4096):
    blob[i] = 1
with open(sys.argv[1], "wb") as fh:   # ~4 MiB written to disk
    fh.write(os.urandom(4 * 2**20)); fh.flush(); os.fsync(fh.fileno())
print("ready", flush=True)
time.sleep(30)
"""


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    monkeypatch.setattr(monitor.shutil, "which", lambda name: None)


@pytest.fixture
def child(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "blob")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _rows(path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=True)


def test_rows_follow_the_schema_and_measure_the_child(tmp_path, child, no_gpu):
    path = tmp_path / "logs" / "perf" / "rank3.csv"
    mon = ResourceMonitor(str(path), rank=3, host="n7", interval=0.5)
    t0 = time.time()
    assert mon.maybe_sample(child.pid, t0)
    assert mon.maybe_sample(None, t0 + 0.6)
    mon.close()
    df = _rows(path)
    assert tuple(df.columns) == FIELDS
    assert len(df) == 2 and set(df["rank"]) == {3} and set(df["host"]) == {"n7"}
    assert df["time"].iloc[0] == pytest.approx(t0, abs=1e-3)
    assert df["rss_child"].iloc[0] >= 60 * 2**20
    assert pd.isna(df["rss_child"].iloc[1])  # no child at the second sample
    assert (df["rss_supervisor"] > 10 * 2**20).all()
    assert df["gpu_util"].isna().all() and df["gpu_mem"].isna().all()
    assert (df["write_bytes"].diff().dropna() >= 0).all()  # cumulative, never goes back


def test_io_counters_accumulate_across_processes(tmp_path, child, no_gpu):
    try:  # the child has already written and fsynced its 4 MiB
        io = monitor.psutil.Process(child.pid).io_counters()
    except (AttributeError, monitor.psutil.AccessDenied):
        pytest.skip("no per-process IO counters on this platform")
    if io.write_bytes < 4 * 2**20:
        pytest.skip(f"this file system does not account writes per process ({io.write_bytes} B)")
    mon = ResourceMonitor(str(tmp_path / "r.csv"), 0, "h", 1.0)
    mon.maybe_sample(child.pid, 0.0)
    mon.close()
    assert _rows(tmp_path / "r.csv")["write_bytes"].iloc[0] >= 4 * 2**20


def test_sampling_only_when_due_and_cheap_otherwise(tmp_path, no_gpu):
    mon = ResourceMonitor(str(tmp_path / "r.csv"), 0, "h", interval=10.0)
    due = [mon.maybe_sample(None, t) for t in (100.0, 105.0, 109.9, 110.0, 111.0, 125.0)]
    assert due == [True, False, False, True, False, True]
    start = time.perf_counter()
    for i in range(20000):
        mon.maybe_sample(None, 125.0 + i * 1e-4)
    per_call = (time.perf_counter() - start) / 20000
    mon.close()
    assert len(_rows(tmp_path / "r.csv")) == 3
    assert per_call < 20e-6, f"maybe_sample costs {per_call * 1e6:.1f} us when not due"


def test_interval_zero_disables_and_reopen_keeps_one_header(tmp_path, no_gpu):
    off = ResourceMonitor(str(tmp_path / "off.csv"), 0, "h", interval=0)
    assert not off.maybe_sample(None, 1.0)
    off.close()
    assert not (tmp_path / "off.csv").exists()
    for start in (0.0, 100.0):  # a resumed run appends to the same file
        mon = ResourceMonitor(str(tmp_path / "r.csv"), 0, "h", interval=1.0)
        mon.maybe_sample(None, start)
        mon.close()
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == ",".join(FIELDS) and len(lines) == 3
    assert sum(ln.startswith("time,") for ln in lines) == 1


def test_vanished_child_leaves_empty_field(tmp_path, no_gpu):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    mon = ResourceMonitor(str(tmp_path / "r.csv"), 0, "h", 1.0)
    assert mon.maybe_sample(proc.pid, 0.0)
    mon.close()
    assert pd.isna(_rows(tmp_path / "r.csv")["rss_child"].iloc[0])


def _fake_nvml(util: int, used: int) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    mod.nvmlInit = lambda: None
    mod.nvmlShutdown = lambda: None
    mod.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    mod.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=util + h[1])
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=used)
    return mod


def test_gpu_columns_from_nvml_for_the_visible_device(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(40, 3 * 2**30))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    mon = ResourceMonitor(str(tmp_path / "r.csv"), 0, "h", 1.0)
    mon.maybe_sample(None, 0.0)
    mon.close()
    row = _rows(tmp_path / "r.csv").iloc[0]
    assert row["gpu_util"] == 42 and row["gpu_mem"] == 3 * 2**30


def _fake_smi(tmp_path, body: str) -> str:
    exe = tmp_path / "bin" / "nvidia-smi"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


def test_gpu_columns_from_nvidia_smi_when_no_nvml(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    smi = _fake_smi(tmp_path, 'echo "$@" >> "$(dirname "$0")/calls"; printf "5, 100\\n77, 2048\\n"')
    monkeypatch.setattr(monitor.shutil, "which", lambda name: smi)
    mon = ResourceMonitor(str(tmp_path / "r.csv"), 1, "h", 1.0, gpu_index=1)
    for t in (0.0, 0.5, 1.0):
        mon.maybe_sample(None, t)
    mon.close()
    df = _rows(tmp_path / "r.csv")
    assert df["gpu_util"].tolist() == [77, 77] and df["gpu_mem"].tolist() == [2048 * 2**20] * 2
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert len(calls) == 2 and "--format=csv,noheader,nounits" in calls[0]


def test_broken_nvidia_smi_is_asked_once_then_left_empty(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    smi = _fake_smi(tmp_path, 'echo x >> "$(dirname "$0")/calls"; echo "NVIDIA-SMI has failed" >&2; exit 9')
    monkeypatch.setattr(monitor.shutil, "which", lambda name: smi)
    mon = ResourceMonitor(str(tmp_path / "r.csv"), 0, "h", 1.0)
    for t in (0.0, 1.0, 2.0):
        mon.maybe_sample(None, t)
    mon.close()
    assert _rows(tmp_path / "r.csv")["gpu_util"].isna().all()
    assert len((tmp_path / "bin" / "calls").read_text().splitlines()) == 1
    assert os.path.exists(tmp_path / "r.csv")
