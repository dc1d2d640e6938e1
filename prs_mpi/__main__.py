"""`python -m prs_mpi job.toml` == `prs-mpi job.toml`."""
import sys

from .cli import main

sys.exit(main())
