"""Test kit: job directories with entry scripts, and an `mpiexec` launcher (dask-mpi style)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")
PRS = [sys.executable, "-m", "prs_mpi"]


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def launch(nprocs: int | None, args: list[str], timeout: float = 180, env: dict | None = None,
           cwd: str | None = None) -> Completed:
    """Run `mpiexec -n N python -m prs_mpi ARGS` (or without mpiexec when nprocs is None)."""
    if nprocs is None:
        cmd = [*PRS, *args]
    else:
        if MPIEXEC is None:
            pytest.skip("no mpiexec found: pip install mpich (or the project's [mpich] extra)")
        cmd = [MPIEXEC, "-n", str(nprocs), *PRS, *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(cmd)} hung for {timeout}s:\n{exc.stdout}\n{exc.stderr}") from None
    return Completed(p.returncode, p.stdout, p.stderr)


class JobDir:
    """A temporary job: data files, an entry script and a job.toml written from keyword arguments."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir()

    def files(self, n: int, prefix: str = "f", content=lambda i: f"item {i}\n") -> list[Path]:
        out = []
        for i in range(n):
            p = self.data / f"{prefix}{i:05d}.txt"
            p.write_text(content(i))
            out.append(p)
        return out

    def script(self, body: str, name: str = "score.py") -> Path:
        p = self.root / name
        p.write_text(textwrap.dedent(body))
        return p

    def job(self, name: str = "job.toml", input_paths=("data/*.txt",), **keys) -> Path:
        lines = []
        tables = {k: keys.pop(k) for k in list(keys) if isinstance(keys[k], dict)}
        keys.setdefault("entry_script", "score.py")
        keys.setdefault("output_dir", "out")
        keys.setdefault("resource_monitor_interval", 0)
        for k, v in keys.items():
            lines.append(f"{k} = {toml_value(v)}")
        input_table = {"paths": list(input_paths), **tables.pop("input", {})}
        lines.append("[input]")
        lines += [f"{k} = {toml_value(v)}" for k, v in input_table.items()]
        for t, vals in tables.items():
            lines.append(f"[{t}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in vals.items()]
        p = self.root / name
        p.write_text("\n".join(lines) + "\n")
        return p

    @property
    def out(self) -> Path:
        return self.root / "out"

    def rows(self, name: str = "parallel_run_step.txt") -> list[str]:
        return (self.out / name).read_text().splitlines()

    def result(self) -> dict:
        import json
        return json.loads((self.out / "job_result.json").read_text())


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


ECHO = """
import os
def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""
