"""User code in the supervised child: return validation, row encoding, crashes and timeouts (no MPI)."""
from __future__ import annotations

import time
import textwrap

import pandas as pd
import pytest

from prs_mpi.child import ChildSpec, UserCode, encode_frame, encode_rows
from prs_mpi.dataset import MiniBatchSpec
from prs_mpi.protocol import Status
from prs_mpi.supervisor import ChildProcess, InProcess, child_environment


def make_spec(tmp_path, body: str, **kw) -> ChildSpec:
    script = tmp_path / "entry.py"
    script.write_text(textwrap.dedent(body))
    base = dict(entry_script_path=str(script), source_directory=str(tmp_path), arguments=("--alpha", "3"),
                output_action="append_row", append_row_format="csv", input_kind="file")
    base.update(kw)
    return ChildSpec(**base)


def batch(n: int, bid: int = 0) -> MiniBatchSpec:
    items = tuple(f"/data/x{i}.png" for i in range(n))
    return MiniBatchSpec(id=bid, items=items, nitems=n)


def test_list_return_becomes_lines_with_newlines_escaped():
    assert encode_rows(["a", 1, b"b\xc3\xa9", "two\nlines\r"]) == "a\n1\nbé\ntwo\\nlines\\r\n".encode()


def test_frame_encoding_csv_and_jsonl():
    df = pd.DataFrame({"id": [1, 2], "text": ["x", "multi\nline"]})
    body, header = encode_frame(df, "csv")
    assert header == b"id,text\n"
    assert pd.read_csv(__import__("io").BytesIO(header + body)).equals(df)
    body, header = encode_frame(df, "jsonl")
    assert header is None and body.count(b"\n") == 2


def test_partial_too_many_and_wrong_types(tmp_path):
    code = UserCode(make_spec(tmp_path, """
        import sys
        mode = {}
        def init():
            mode['args'] = sys.argv[1:]
        def run(mini_batch):
            n = len(mini_batch)
            if n == 1: return None
            if n == 2: return mini_batch + ['extra']
            if n == 3: return mini_batch[:1]
            if n == 4: raise ValueError('bad record in ' + mini_batch[0])
            if n == 5: sys.exit(42)
            return [mode['args']] * n
    """))
    code.init()
    r = code.run(batch(1), 1)
    assert r.status == Status.FAILED and "returned NoneType" in r.error
    r = code.run(batch(2), 1)
    assert r.status == Status.FAILED and "returned 3 elements for a mini-batch of 2" in r.error
    r = code.run(batch(3), 1)
    assert r.status == Status.PARTIAL and r.succeeded == 1 and r.data == b"/data/x0.png\n"
    r = code.run(batch(4), 1)
    assert r.status == Status.FAILED and "ValueError: bad record in /data/x0.png" in r.error
    assert "Traceback" in r.error
    r = code.run(batch(5), 1)
    assert r.status == Status.FAILED and "SystemExit: 42" in r.error
    r = code.run(batch(6), 1)
    assert r.status == Status.OK and r.data.splitlines()[0] == b"['--alpha', '3']"


def test_context_argument_and_dataframe_return(tmp_path):
    code = UserCode(make_spec(tmp_path, """
        import pandas as pd
        def run(mini_batch, ctx):
            return pd.DataFrame({'f': mini_batch, 'id': ctx.mini_batch_id, 'attempt': ctx.attempt})
    """))
    code.init()
    r = code.run(batch(2, bid=7), 2)
    assert r.status == Status.OK and r.header == b"f,id,attempt\n"
    assert r.data == b"/data/x0.png,7,2\n/data/x1.png,7,2\n"


def test_summary_only_counts_without_output(tmp_path):
    code = UserCode(make_spec(tmp_path, "def run(b):\n    return [1] * (len(b) - 1)\n", output_action="summary_only"))
    code.init()
    r = code.run(batch(3), 1)
    assert r.status == Status.PARTIAL and r.succeeded == 2 and r.data == b""


def _events_until(child: ChildProcess, stop, deadline: float = 30.0) -> list:
    """The child's events until `stop(events)` holds (polled with a deadline)."""
    events, end = [], time.monotonic() + deadline
    while time.monotonic() < end:
        ev = child.poll()
        if ev is None:
            time.sleep(0.005)
            continue
        events.append(ev)
        if stop(events):
            return events
    raise AssertionError(f"no such events from the child in {deadline:g}s: {events}")


def _drive(child: ChildProcess, deadline: float = 30.0):
    """The child's next event."""
    return _events_until(child, bool, deadline)[0]


SCRIPT = """
import ctypes, os, sys, time
def init():
    print('init on stdout goes to the user log')
def run(mini_batch):
    what = mini_batch[0]
    if what == 'segv': ctypes.string_at(0)
    if what == 'exit': os._exit(3)
    if what == 'hang_py':
        while True: pass
    if what == 'hang_c': ctypes.CDLL(None).sleep(100)
    return mini_batch
"""


@pytest.mark.parametrize("what,kind,needle", [
    ("segv", "crashed", "SIGSEGV"), ("exit", "crashed", "exited with code 3"),
    ("hang_py", "timeout", "run_invocation_timeout=1s"), ("hang_c", "timeout", "run_invocation_timeout=1s")])
def test_child_process_survives_crashes_and_hangs(tmp_path, what, kind, needle):
    log = tmp_path / "user.log"
    child = ChildProcess(make_spec(tmp_path, SCRIPT), child_environment({"PATH": "/usr/bin:/bin"}, {}), str(log),
                         timeout=1.0)
    child.start()
    assert _drive(child)[0] == "init_ok"
    child.submit_many([(MiniBatchSpec(id=1, items=("ok",), nitems=1), 1)])
    ev = _drive(child)
    assert ev[0] == "result" and ev[2].status == Status.OK
    t0 = time.monotonic()
    child.submit_many([(MiniBatchSpec(id=2, items=(what,), nitems=1), 1)])
    ev = _drive(child)
    assert ev[0] == kind and needle in ev[1], ev
    assert time.monotonic() - t0 < 10
    assert "init on stdout goes to the user log" in log.read_text()
    child.kill()


def test_child_env_strips_mpi_variables():
    env = child_environment({"PMI_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "HOME": "/root"}, {"X": "1"})
    assert env == {"HOME": "/root", "X": "1", "PYTHONUNBUFFERED": "1"}


def test_init_failure_is_reported_with_traceback(tmp_path):
    child = ChildProcess(make_spec(tmp_path, "def init():\n    raise RuntimeError('no model')\ndef run(b):\n    return b\n"),
                         child_environment({"PATH": "/usr/bin:/bin"}, {}), str(tmp_path / "u.log"), timeout=5)
    child.start()
    ev = _drive(child)
    assert ev[0] == "init_err" and "RuntimeError: no model" in ev[1]
    child.kill()


@pytest.mark.parametrize("init_takes_sigalrm", [False, True])
def test_in_process_timeout_for_python_code(tmp_path, init_takes_sigalrm):
    script = SCRIPT
    if init_takes_sigalrm:      # the timeout is prs-mpi's from the end of init() on
        script = SCRIPT.replace("def init():", "def init():\n    import signal; signal.signal(signal.SIGALRM, signal.SIG_IGN)")
    runner = InProcess(make_spec(tmp_path, script), timeout=0.5)
    runner.start()
    assert runner.poll()[0] == "init_ok"
    runner.submit_many([(MiniBatchSpec(id=1, items=("hang_py",), nitems=1), 1)])
    ev = runner.poll()
    assert ev[0] == "timeout" and "run_invocation_timeout" in ev[1]
    runner.submit_many([(MiniBatchSpec(id=2, items=("ok",), nitems=1), 1)])   # the next one runs on
    ev = runner.poll()
    assert ev[0] == "result" and ev[2].status == Status.OK


def _held_child(tmp_path, timeout: float = 30.0) -> ChildProcess:
    (tmp_path / ".prs").mkdir()
    child = ChildProcess(make_spec(tmp_path, SCRIPT, state_dir=str(tmp_path / ".prs"), rank=2),
                         child_environment({"PATH": "/usr/bin:/bin"}, {}), str(tmp_path / "u.log"), timeout=timeout)
    child.start()
    assert _drive(child)[0] == "init_ok"
    return child


def test_tiny_results_come_back_in_groups_and_in_order(tmp_path):
    child = _held_child(tmp_path)
    messages = []
    recv = child.conn.recv
    child.conn.recv = lambda: messages.append(recv()) or messages[-1]
    child.submit_many([(MiniBatchSpec(id=i, items=(f"x{i}",), nitems=1), 1) for i in range(40)])
    events = _events_until(child, lambda evs: len(evs) == 40)
    assert [ev[1] for ev in events] == list(range(40)) and all(ev[2].status == Status.OK for ev in events)
    assert all(ev[2].start <= ev[2].end for ev in events)       # the child's own clock
    assert 2 <= len(messages) < 40 and max(len(m[1]) for m in messages) > 1
    child.kill()


@pytest.mark.parametrize("what,kind", [("exit", "crashed"), ("hang_py", "timeout")])
def test_a_death_names_the_running_mini_batch_though_earlier_results_were_held(tmp_path, what, kind):
    child = _held_child(tmp_path, timeout=1.0)
    group = [(MiniBatchSpec(id=i, items=(f"x{i}",), nitems=1), 1) for i in range(5)]
    group += [(MiniBatchSpec(id=5, items=(what,), nitems=1), 1), (MiniBatchSpec(id=6, items=("x6",), nitems=1), 1)]
    child.submit_many(group)
    events = _events_until(child, lambda evs: evs[-1][0] != "result")
    assert events[-1][0] == kind and events[-1][2] == 5, events[-1]
    assert [ev[1] for ev in events[:-1]] == list(range(len(events) - 1))    # whatever came, in order
    child.kill()


def test_last_started_reads_only_what_this_child_wrote(tmp_path):
    from prs_mpi.journal import StartLog, last_started
    log = StartLog(str(tmp_path), 0)
    path = StartLog.path(str(tmp_path), 0)
    log.started(7, 1)
    since = len(open(path, "rb").read())
    assert last_started(path, since) is None                   # the earlier child's 7 is not this one's
    log.started(8, 1)
    log.ended([(8, 1)])
    log.started(9, 2)
    log.ended([(3, 1)])
    assert last_started(path, since) == 9
    assert last_started(path, 0, tail=12) == 9                 # read from a line start
    assert last_started(path, 0, tail=10) is None              # "9 2\n": cut, so skipped
    log.close()
