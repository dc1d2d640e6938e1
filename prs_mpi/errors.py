"""Exception types and the exit codes every prs-mpi command uses."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1          # the job ran but failed (a threshold, every worker lost, ...)
EXIT_USAGE = 2           # bad command line or job file: nothing was run
EXIT_INTERNAL = 70       # a bug or an unexpected error in prs-mpi itself (EX_SOFTWARE)
EXIT_INTERRUPTED = 75    # stopped by a signal; resumable with --resume (EX_TEMPFAIL)


class PrsError(Exception):
    """Base class: an error whose message is meant for the user as it is."""

    exit_code = EXIT_FAILED


class ConfigError(PrsError):
    """A job file or override is invalid. The message names the file, key, expected and found."""

    exit_code = EXIT_USAGE


class InputError(PrsError):
    """The input cannot be listed or read (missing path, pattern matching nothing)."""

    exit_code = EXIT_USAGE


class JobFailed(PrsError):
    """The job ran and failed: a threshold was exceeded or no worker could run it."""

    exit_code = EXIT_FAILED


class RunStateError(PrsError):
    """output_dir holds a run that conflicts with what was asked (resume/reuse rules)."""

    exit_code = EXIT_USAGE


class Interrupted(PrsError):
    """The job was stopped by a signal after committing what was done."""

    exit_code = EXIT_INTERRUPTED
