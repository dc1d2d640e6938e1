"""The supervised child: imports the entry script and runs init()/run()/shutdown() for one rank.

`UserCode` holds the logic and is used directly with isolation = "none"; `main()` wraps it in a
loop over a socket to the supervisor (`supervisor.CHILD_MAIN`). This module never imports
MPI: the child is a plain process, so a crash in it cannot take the MPI job down.
"""
from __future__ import annotations

from .compact import Compact

import importlib.util
import inspect
import io
import os
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from .protocol import Status

MAX_ERROR_CHARS = 20_000


@dataclass(frozen=True)
class ChildSpec:
    """Everything the child needs to know about the job (picklable, no MPI objects)."""

    entry_script_path: str
    source_directory: str
    arguments: tuple[str, ...]
    output_action: str
    append_row_format: str
    input_kind: str
    input_options: Mapping[str, Any] = field(default_factory=dict)
    input_mode: str = "download"
    scratch_dir: str | None = None
    compat: str | None = None
    rank: int = 0
    state_dir: str | None = None     # where the start log lives (see journal.StartLog)


@dataclass(slots=True)
class RunResult(Compact):
    status: str                    # a Status value, as a plain str (cheap to pickle)
    nitems: int
    succeeded: int
    data: bytes = b""
    header: bytes | None = None
    error: str | None = None
    run_seconds: float = 0.0
    input_seconds: float = 0.0
    start: float = 0.0             # wall clock (time.time()) when the child began it, and ended it;
    end: float = 0.0               # 0 for results made by the supervisor (crash, timeout)

    def __post_init__(self) -> None:
        self.status = str(self.status)


def format_exc(limit_chars: int = MAX_ERROR_CHARS) -> str:
    text = traceback.format_exc()
    return text if len(text) <= limit_chars else text[:limit_chars // 2] + "\n...\n" + text[-limit_chars // 2:]


class UserCode:
    """One entry script, loaded once; run() calls are validated and their rows encoded."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.module: Any = None
        self._run_takes_context = False
        self._start_log: Any = None
        self._downloader: Any = None
        self._prefetched: dict[int, Any] = {}
        self._download = spec.input_kind == "file" and spec.input_mode == "download"

    # -------------------------------------------------------------- lifecycle
    def init(self) -> float:
        t0 = time.perf_counter()
        spec = self.spec
        if spec.compat == "azureml":
            from . import compat
            compat.install()
        sys.argv = [spec.entry_script_path, *spec.arguments]
        if spec.source_directory not in sys.path:
            sys.path.insert(0, spec.source_directory)
        name = os.path.splitext(os.path.basename(spec.entry_script_path))[0]
        mod_spec = importlib.util.spec_from_file_location(name, spec.entry_script_path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        mod_spec.loader.exec_module(module)
        if not callable(getattr(module, "run", None)):
            raise TypeError(f"{spec.entry_script_path} defines no callable run(mini_batch)")
        self.module = module
        self._run_takes_context = _positional_params(module.run) >= 2
        if callable(getattr(module, "init", None)):
            module.init()
        return time.perf_counter() - t0

    def shutdown(self) -> None:
        if self.module is not None and callable(getattr(self.module, "shutdown", None)):
            self.module.shutdown()

    # -------------------------------------------------------------- one mini-batch
    def run(self, batch: Any, attempt: int) -> RunResult:
        if self.spec.state_dir is not None:
            if self._start_log is None:
                from .journal import StartLog
                self._start_log = StartLog(self.spec.state_dir, self.spec.rank)
            self._start_log.started(batch.id, attempt)    # before user code: survives a job-killing crash
        start = time.time()
        t0 = time.perf_counter()
        nitems = batch.nitems
        try:
            mini_batch, cleanup = self._load_input(batch)
        except Exception:
            return RunResult(Status.FAILED, max(nitems, 0), 0, error="reading the mini-batch failed:\n" + format_exc(),
                             input_seconds=time.perf_counter() - t0, start=start, end=time.time())
        if nitems < 0:
            nitems = len(mini_batch)
        t1 = time.perf_counter()
        try:
            if self._run_takes_context:
                from .entry import MiniBatchContext
                ctx = MiniBatchContext(batch.id, attempt, self.spec.rank, dict(batch.partition or {}), batch.dataset)
                returned = self.module.run(mini_batch, ctx)
            else:
                returned = self.module.run(mini_batch)
            run_seconds = time.perf_counter() - t1
            result = self._encode(returned, nitems)
        except (Exception, SystemExit):
            run_seconds = time.perf_counter() - t1
            result = RunResult(Status.FAILED, nitems, 0, error=format_exc())
        finally:
            cleanup()
        result.run_seconds, result.input_seconds, result.start, result.end = run_seconds, t1 - t0, start, time.time()
        return result

    def _needs_download(self, batch: Any) -> bool:
        return self._download and "://" in "\n".join(batch.items)

    def prefetch(self, batch: Any) -> None:
        """Start downloading `batch`'s remote files in the background (I/O overlaps compute)."""
        if batch.id in self._prefetched or not self._needs_download(batch):
            return
        from concurrent.futures import ThreadPoolExecutor
        from .storage import fetch_batch
        if self._downloader is None:
            self._downloader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prs-prefetch")
        self._prefetched[batch.id] = self._downloader.submit(fetch_batch, list(batch.items), self.spec.scratch_dir)

    def _load_input(self, batch: Any) -> tuple[Any, Any]:
        if self.spec.input_kind == "tabular":
            from .tabular import read_slice
            return read_slice(batch.slice, self.spec.input_options), _nothing
        if batch.id in self._prefetched:
            return self._prefetched.pop(batch.id).result()
        if self._needs_download(batch):
            from .storage import fetch_batch
            return fetch_batch(list(batch.items), self.spec.scratch_dir)
        return list(batch.items), _nothing

    # -------------------------------------------------------------- returned rows → bytes
    def _encode(self, returned: Any, nitems: int) -> RunResult:
        pd = sys.modules.get("pandas")    # no DataFrame can exist unless pandas was imported
        if pd is not None and isinstance(returned, pd.DataFrame):
            count = len(returned)
            data, header = b"", None
            if self.spec.output_action == "append_row" and count:
                data, header = encode_frame(returned, self.spec.append_row_format)
        elif returned is None or isinstance(returned, (str, bytes, dict)) or not hasattr(returned, "__len__"):
            return RunResult(Status.FAILED, nitems, 0, error=(
                f"run() returned {type(returned).__name__}; return a list or a pandas DataFrame "
                "with one element per input that succeeded"))
        else:
            count = len(returned)
            data, header = b"", None
            if self.spec.output_action == "append_row" and count:
                if self.spec.append_row_format == "parquet":
                    import pandas
                    data, header = encode_frame(pandas.DataFrame({"value": rows_as_text(returned)}), "parquet")
                else:
                    data = encode_rows(returned)
        if count > nitems:
            return RunResult(Status.FAILED, nitems, 0, error=(
                f"run() returned {count} elements for a mini-batch of {nitems} inputs; "
                "return at most one element per input"))
        status = Status.OK if count == nitems else Status.PARTIAL
        return RunResult(status, nitems, count, data, header)


def _nothing() -> None:
    """No clean-up to do."""


def rows_as_text(rows: Any) -> list[str]:
    """str() of each element; bytes decoded as UTF-8."""
    return [row.decode("utf-8", "backslashreplace") if isinstance(row, bytes) else str(row) for row in rows]


def encode_rows(rows: Any) -> bytes:
    """One line per element: str() of it, bytes decoded as UTF-8; CR/LF inside are escaped as \\r, \\n."""
    out = io.StringIO()
    for text in rows_as_text(rows):
        if "\n" in text or "\r" in text:
            text = text.replace("\r", "\\r").replace("\n", "\\n")
        out.write(text)
        out.write("\n")
    return out.getvalue().encode("utf-8", "surrogateescape")


def encode_frame(df: Any, fmt: str) -> tuple[bytes, bytes | None]:
    """DataFrame rows as CSV (header returned apart, written once at the top), JSON Lines, or an
    Arrow IPC stream (parquet: the supervisor writes the Parquet part file)."""
    if fmt == "parquet":
        import pyarrow as pa
        table = pa.Table.from_pandas(df, preserve_index=False)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes(), None
    if fmt == "jsonl":
        text = df.to_json(orient="records", lines=True, date_format="iso", default_handler=str)
        return (text if text.endswith("\n") else text + "\n").encode(), None
    from .framecsv import numeric_body
    body = numeric_body(df) or df.to_csv(index=False, header=False, lineterminator="\n").encode()
    header = df.iloc[:0].to_csv(index=False, header=True, lineterminator="\n")
    return body, header.encode()


def _positional_params(func: Any) -> int:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


# ------------------------------------------------------------------ the child process

# Results of mini-batches that ran shorter than HOLD_RUN are held and sent together: once
# HOLD_COUNT are held, HOLD_SECONDS have passed since the first, a longer one ended, or the child
# waits for work. One message and one supervisor wake-up per group instead of per mini-batch
# (no-op dispatch with 8 ranks on 2 cores: bench/RESULTS.md). Only with a start log: if the child
# dies, its last `S` line tells the supervisor which mini-batch was running (the held ones before
# it are run again).
HOLD_RUN = 0.001
HOLD_SECONDS = 0.002
HOLD_COUNT = 32


class _Held:
    """Results not yet sent to the supervisor."""

    def __init__(self, conn: Any, enabled: bool) -> None:
        self.conn, self.enabled = conn, enabled
        self.results: list[tuple[int, RunResult]] = []
        self.since = 0.0

    def add(self, batch_id: int, result: RunResult) -> None:
        if not self.results:
            self.since = time.monotonic()
        self.results.append((batch_id, result))
        if not (self.enabled and result.run_seconds + result.input_seconds < HOLD_RUN
                and len(self.results) < HOLD_COUNT and time.monotonic() - self.since < HOLD_SECONDS):
            self.send()

    def send(self) -> None:
        if self.results:
            self.conn.send(("results", self.results))
            self.results = []


def serve(conn: Any) -> int:
    """Answer the supervisor's requests until told to shut down (or the pipe closes)."""
    code: UserCode | None = None
    pending: deque[tuple] = deque()     # received, not yet handled; one ("one", batch, attempt) per mini-batch
    held = _Held(conn, False)
    parent = os.getppid()

    def receive() -> None:
        msg = conn.recv()
        if msg[0] == "run":
            pending.extend(("one", batch, attempt) for batch, attempt in msg[1])
        else:
            pending.append(msg)

    while True:
        try:
            if not pending:
                held.send()             # about to wait: nothing may stay held
                receive()
            while len(pending) < 2 and conn.poll(0):   # the next downloads can start early
                receive()
        except (EOFError, OSError):
            return 0
        msg = pending.popleft()
        kind = msg[0]
        if kind == "one":
            if os.getppid() != parent:  # the supervisor died (the job, maybe under the last run):
                return 0                # a start logged now would be charged in its place
            if pending and pending[0][0] == "one":
                code.prefetch(pending[0][1])    # download its remote files while this one runs
            held.add(msg[1].id, code.run(msg[1], msg[2]))
            continue
        held.send()
        if kind == "init":
            code = UserCode(msg[1])
            held.enabled = msg[1].state_dir is not None
            try:
                conn.send(("init_ok", code.init()))
            except BaseException:
                conn.send(("init_err", format_exc()))
                return 1
        elif kind == "shutdown":
            try:
                if code is not None:
                    code.shutdown()
                conn.send(("bye", None))
            except BaseException:
                conn.send(("bye", format_exc()))
            return 0


def main(argv: list[str] | None = None) -> int:
    import signal
    from .pipe import Pipe
    # Slurm hands its signals to every process of the step: stopping is the supervisor's business
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    argv = sys.argv[1:] if argv is None else argv
    conn = Pipe(int(argv[0]))
    return serve(conn)

