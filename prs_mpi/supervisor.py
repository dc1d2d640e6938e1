"""Starting, watching, timing out, killing and restarting the process that runs user code.

`ChildProcess` (isolation = "process") and `InProcess` (isolation = "none") offer one interface
to the worker: start() begins init(); submit() starts one run(); poll() returns the next event:

    ("init_ok", seconds) | ("init_err", traceback) | ("result", batch_id, RunResult)
    | ("crashed", reason, culprit) | ("timeout", reason, culprit)

`culprit` is the id of the mini-batch the child was running, from its start log, or None when
unknown (the first one handed over then). The ones handed over before it ran to the end, but a
child holds the results of tiny mini-batches for a moment (child.HOLD_RUN): theirs died with it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from typing import Any, Mapping

from .child import HOLD_RUN, HOLD_SECONDS, ChildSpec, UserCode, format_exc
from .journal import StartLog, last_started
from .pipe import Pipe

# variables that would make a child's own MPI_Init join (and confuse) this MPI job
# run through -c so that ChildSpec/RunResult pickle as prs_mpi.child.* on both sides
CHILD_MAIN = "import sys; from prs_mpi.child import main; sys.exit(main())"
_MPI_ENV_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "MPIR_", "PRTE_", "HYDI_")


def child_environment(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(_MPI_ENV_PREFIXES)}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL when its supervisor rank dies (no orphaned GPU jobs)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (killed: out of memory?)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exited with code {returncode}"


def tail_file(path: str, max_lines: int = 15, max_bytes: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            lines = f.read().decode("utf-8", "replace").splitlines()[-max_lines:]
    except OSError:
        return ""
    return "\n".join(lines)


class ChildProcess:
    """A spawned `python -m prs_mpi.child` with a socket to it; never forked, never MPI."""

    def __init__(self, spec: ChildSpec, env: Mapping[str, str], log_path: str, timeout: float,
                 cpus: tuple[int, ...] = (), memory_limit: int | None = None) -> None:
        self.spec, self.env, self.log_path, self.timeout = spec, dict(env), log_path, timeout
        self.cpus, self.memory_limit = cpus, memory_limit
        self.proc: subprocess.Popen | None = None
        self.conn: Pipe | None = None
        self.deadline: float | None = None
        self.running: deque[int] = deque()     # ids handed to the child, in order
        self.events: deque[tuple] = deque()    # received, not yet returned by poll() (as InProcess's)
        self.start_log_path = StartLog.path(spec.state_dir, spec.rank) if spec.state_dir else None
        self.log_offset = 0                    # the start log's size when this child began

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def waitables(self) -> list[Any]:
        return [self.conn] if self.conn is not None else []

    def start(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        limit = self.memory_limit
        if self.start_log_path is not None:
            try:
                self.log_offset = os.path.getsize(self.start_log_path)
            except OSError:
                self.log_offset = 0

        def preexec() -> None:
            _die_with_parent()
            if limit:
                import resource
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        with open(self.log_path, "ab", buffering=0) as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD_MAIN, str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=self.env, start_new_session=True, preexec_fn=preexec)
        child_sock.close()
        self.conn = Pipe(parent_sock.detach())
        if self.cpus:
            try:
                import psutil
                psutil.Process(self.proc.pid).cpu_affinity(list(self.cpus))
            except Exception:  # pinning is best effort; the plan table says what was asked
                pass
        self.conn.send(("init", self.spec))
        self.deadline = None

    def submit_many(self, group: list[tuple[Any, int]]) -> None:
        """Hand (batch, attempt) pairs to the child in one message; it runs them in order."""
        if not self.running:
            self.deadline = time.monotonic() + self.timeout
        self.running.extend(batch.id for batch, _ in group)
        try:
            self.conn.send(("run", group))
        except OSError:      # the child just died: poll() reports it and the group goes back
            pass

    def poll(self) -> tuple | None:
        if self.events:
            return self.events.popleft()
        if self.conn is None:
            return None
        try:
            if self.conn.poll(0):
                msg = self.conn.recv()
                if msg[0] != "results":
                    return msg
                for batch_id, result in msg[1]:
                    self.running.popleft()
                    self.events.append(("result", batch_id, result))
                # results held behind a long one reach us that much later (child.HOLD_SECONDS)
                slack = HOLD_SECONDS + HOLD_RUN
                self.deadline = time.monotonic() + self.timeout + slack if self.running else None
                return self.events.popleft()
        except (EOFError, OSError):
            pass  # the child is gone: reported below once its exit status is known
        if self.proc.poll() is not None or self._conn_closed():
            return ("crashed", self._crash_reason(), self._culprit())
        if self.deadline is not None and time.monotonic() > self.deadline:
            culprit = self._culprit()
            self.kill()
            return ("timeout", f"run() did not return within run_invocation_timeout={self.timeout:g}s; "
                               "the child process was killed (raise the timeout or make the mini-batch smaller)",
                    culprit)
        return None

    def _culprit(self) -> int | None:
        """The mini-batch the child was running: its start log's last `S` since it began."""
        if self.start_log_path is None or not self.running:
            return None
        batch_id = last_started(self.start_log_path, self.log_offset)
        return batch_id if batch_id in self.running else None

    def _conn_closed(self) -> bool:
        try:
            return self.conn.closed
        except Exception:
            return True

    def _crash_reason(self) -> str:
        code = self.proc.wait()
        self._close()
        tail = tail_file(self.log_path)
        reason = f"the child process running user code {describe_exit(code)}"
        return reason + (f"; last lines of {self.log_path}:\n{tail}" if tail else f"; see {self.log_path}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            self.proc.wait()
        self._close()
        self.running.clear()
        self.events.clear()
        self.deadline = None

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def shutdown(self, timeout: float) -> str | None:
        """Call the script's shutdown(); returns its traceback if it failed."""
        error = None
        if self.conn is not None and self.proc.poll() is None:
            try:
                self.conn.send(("shutdown",))
                if self.conn.poll(timeout):
                    error = self.conn.recv()[1]
                else:
                    error = f"shutdown() did not return within {timeout:g}s"
            except (EOFError, OSError):
                error = "the child process died during shutdown()"
        try:
            self.proc.wait(timeout=2.0) if self.proc else None
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        return error


class InProcess:
    """isolation = "none": user code runs in this rank. Timeouts hold for Python code only."""

    def __init__(self, spec: ChildSpec, timeout: float) -> None:
        self.code = UserCode(spec)
        self.timeout = timeout
        self.events: deque[tuple] = deque()
        self.waitables: list[Any] = []

    @property
    def pid(self) -> int:
        return os.getpid()

    def start(self) -> None:
        try:
            self.events.append(("init_ok", self.code.init()))
        except BaseException:
            self.events.append(("init_err", format_exc()))
        # SIGALRM is the run() timeout's from here on (set after init(), which may have taken it);
        # per mini-batch only the timer is armed: signal.signal costs ~10 µs, a no-op run's worth
        signal.signal(signal.SIGALRM, self._alarm)

    def _alarm(self, signum: int, frame: Any) -> None:
        raise TimeoutError(f"run() did not return within run_invocation_timeout={self.timeout:g}s")

    def submit_many(self, group: list[tuple[Any, int]]) -> None:
        for batch, attempt in group:
            self._run_one(batch, attempt)

    def _run_one(self, batch: Any, attempt: int) -> None:
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            result = self.code.run(batch, attempt)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if result.error and "TimeoutError: run() did not return" in result.error:
            self.events.append(("timeout", result.error.strip().splitlines()[-1], batch.id))
        else:
            self.events.append(("result", batch.id, result))

    def poll(self) -> tuple | None:
        return self.events.popleft() if self.events else None

    def kill(self) -> None:
        self.events.clear()

    def shutdown(self, timeout: float) -> str | None:
        try:
            self.code.shutdown()
        except BaseException:
            return format_exc()
        return None
