"""Plain MPI jobs on the real single-node Slurm: the launch paths prs-mpi's templates rely on."""

import sys

import pytest

pytestmark = pytest.mark.slurm

PY = sys.executable
HELLO = ("from mpi4py import MPI; import sys; c = MPI.COMM_WORLD; "
         "sys.stdout.write(f'rank {c.rank} of {c.size}\\n')")


def ranks(output):
    lines = [ln.split() for ln in output.splitlines() if ln.startswith("rank ")]
    return sorted(int(w[1]) for w in lines), {w[3] for w in lines}


def test_sbatch_srun_pmi2_gives_8_distinct_ranks(run_sbatch):
    job = run_sbatch(f'#!/bin/bash\n#SBATCH --ntasks=8\nsrun --mpi=pmi2 {PY} -c "{HELLO}"\n')
    assert job.state == "COMPLETED", job.output
    assert ranks(job.output) == (list(range(8)), {"8"}), job.output


def test_mpiexec_inside_the_allocation_gives_8_distinct_ranks(run_sbatch):
    mpiexec = f"{sys.prefix}/bin/mpiexec"
    job = run_sbatch(f'#!/bin/bash\n#SBATCH --ntasks=8\n{mpiexec} -n 8 {PY} -c "{HELLO}"\n')
    assert job.state == "COMPLETED", job.output
    assert ranks(job.output) == (list(range(8)), {"8"}), job.output
