"""Rank 0's per-mini-batch records: the journal's commit line, the processed_mini_batches.csv row
and the descriptor digest, formatted on a fast path that must match the generic writers byte for
byte, awkward strings included."""
from __future__ import annotations

import csv
import hashlib
import io
import json

import pandas as pd
import pytest

from prs_mpi.dataset import MiniBatchSpec
from prs_mpi.journal import Journal, commit_line, replay
from prs_mpi.protocol import Attempt
from prs_mpi.runlog import PROCESSED_COLUMNS, AttemptLog
from prs_mpi.tabular import TabularSlice


def json_line(offset, length, header, batches):
    record = {"t": "commit", "off": offset, "len": length, "hdr": header, "b": batches}
    return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()


@pytest.mark.parametrize("batches", [
    [],
    [(0, 1, 1, 0, "0123456789abcdef")],
    [(12345678901, 3, 16, 0, "ffffffffffffffff"), (2, 1, 0, 16, "00000000deadbeef")],
    [(1, 1, -1, 0, "abcd")],                           # negative counts (unknown tabular rows)
    [(1, 1, True, 0, "abcd")],                         # a bool: json writes true, not 1
    [(1, 1, 1, 0, 'we"ird\\digest\n')],                # not hex: needs escaping
    [(1, 1, 1, 0, "é")],                               # non-ASCII: json escapes it
    [(1.0, 1, 1, 0, "abcd")],                          # not an int
])
def test_commit_line_is_what_json_dumps_writes(batches):
    assert commit_line(4096, 1234, 17, batches) == json_line(4096, 1234, 17, batches)


def test_commit_lines_replay(tmp_path):
    j = Journal(str(tmp_path))
    j.commit(0, 10, 3, [(0, 1, 2, 0, "00ff"), (1, 2, 1, 1, "a1b2")])
    j.commit(10, 5, 0, [(2, 1, 1, 0, 'x"\n')])
    j.close()
    st = replay(str(tmp_path))
    assert st.regions == [(0, 10, 3), (10, 5, 0)]
    assert st.committed == {0: (1, 2, 0, "00ff", 0, 10), 1: (2, 1, 1, "a1b2", 0, 10),
                            2: (1, 1, 0, 'x"\n', 10, 5)}


def test_a_region_past_a_hole_does_not_outlive_the_resume_that_cut_it(tmp_path):
    """Run 1 commits [0,10) and [20,30) (batch 2) and dies before [10,20) is written; resume cuts
    the file at 10. Run 2 writes [10,20) with batch 3: [20,30) now holds nothing of batch 2's, and
    must not count as committed although it lines up with run 2's region."""
    j = Journal(str(tmp_path))
    j.begin("run1", "fp", "fresh")
    j.commit(0, 10, 0, [(0, 1, 1, 0, "aa")])
    j.commit(20, 10, 0, [(2, 1, 1, 0, "cc")])
    j.flush()
    st = replay(str(tmp_path))
    assert st.kept_end() == 10
    j.begin("run2", "fp", "resume")
    j.commit(10, 10, 0, [(3, 1, 1, 0, "dd")])
    j.close()
    st = replay(str(tmp_path))
    assert st.kept_end() == 20
    assert sorted(st.committed) == [0, 3]
    assert st.regions == [(0, 10, 0), (10, 10, 0)]


def attempt(host="node0001", status="ok", error=None, **kw):
    fields = dict(batch_id=7, attempt=2, rank=3, host=host, pid=4242, nitems=16, succeeded=15, failed=1,
                  start=1700000000.1234567, end=1700000000.3234567, run_seconds=0.2, input_seconds=1e-7,
                  status=status, error=error)
    fields.update(kw)
    return Attempt(**fields)


def csv_writer_row(a, write_seconds):
    summary = (a.error or "").strip().splitlines()[-1:] if a.error else []
    buf = io.StringIO()
    csv.writer(buf).writerow([a.batch_id, a.attempt, a.rank, a.host, a.pid, a.nitems, a.succeeded, a.failed,
                              f"{a.start:.6f}", f"{a.end:.6f}", f"{a.run_seconds:.6f}",
                              f"{a.input_seconds:.6f}", f"{write_seconds:.6f}", a.status,
                              summary[0][:300] if summary else ""])
    return buf.getvalue()


AWKWARD = [attempt(), attempt(host="node,7"), attempt(host='n"1'), attempt(host="n\n1"), attempt(host=""),
           attempt(status="partial"), attempt(status="failed", error='Traceback\nValueError: a, "b"\n'),
           attempt(status="crashed", error="killed\r\n"), attempt(pid=None), attempt(nitems=-1, succeeded=3),
           attempt(host="höst"), attempt(start=0.0, end=1e-7, run_seconds=123456.0000005)]


def test_attempt_rows_are_what_csv_writer_writes_and_read_back(tmp_path):
    log = AttemptLog(str(tmp_path))
    for i, a in enumerate(AWKWARD):
        log.attempt(a, 0.25 * i)
    log.close()
    text = (tmp_path / "logs" / "sys" / "processed_mini_batches.csv").read_bytes().decode()
    expected = "".join(csv_writer_row(a, 0.25 * i) for i, a in enumerate(AWKWARD))
    assert text == ",".join(PROCESSED_COLUMNS) + "\r\n" + expected
    back = list(csv.reader(io.StringIO(text)))[1:]
    assert [r[3] for r in back] == [a.host for a in AWKWARD]
    df = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert list(df["mini_batch_id"]) == [7] * len(AWKWARD) and list(df["status"]) == [a.status for a in AWKWARD]


def old_digest(spec):
    h = hashlib.blake2b(digest_size=8)
    for item in spec.items:
        h.update(item.encode("utf-8", "surrogateescape") + b"\0")
    if spec.slice is not None:
        h.update(repr(spec.slice).encode())
    return h.hexdigest()


@pytest.mark.parametrize("spec", [
    MiniBatchSpec(0), MiniBatchSpec(1, ("a.png",), 1), MiniBatchSpec(2, ("a", "b\0c", "d\udcff", "é"), 4),
    MiniBatchSpec(3, nitems=10, slice=TabularSlice("t.csv", "csv", 0, 100, "bytes")),
])
def test_digest_is_unchanged_so_old_journals_resume(spec):
    assert spec.digest() == old_digest(spec)


def test_commits_are_written_at_flush_and_a_torn_tail_does_not_swallow_the_next_run(tmp_path):
    j = Journal(str(tmp_path))
    j.commit(0, 10, 0, [(0, 1, 1, 0, "aa")])
    assert replay(str(tmp_path)).committed == {}                       # held until the pass ends
    j.flush()
    assert list(replay(str(tmp_path)).committed) == [0]
    j.commit(10, 10, 0, [(1, 1, 1, 0, "bb")])
    j.end("failed", "x")                                               # any other record writes them first
    j.close()
    with open(tmp_path / "journal.jsonl", "ab") as f:
        f.write(b'{"t":"commit","off":20,"le')                         # killed mid-write
    j = Journal(str(tmp_path))
    j.begin("run2", "fp", "resume")
    j.close()
    st = replay(str(tmp_path))
    assert list(st.committed) == [0, 1] and st.runs == 1 and st.fingerprint == "fp"


def test_rows_formatted_by_the_worker_are_what_rank_0_would_write(tmp_path):
    from prs_mpi.runlog import committed_rows
    ok = [attempt(batch_id=1, nbytes=300), attempt(batch_id=2, nbytes=100, status="partial", error="1 item failed")]
    a, b = AttemptLog(str(tmp_path / "a")), AttemptLog(str(tmp_path / "b"))
    a.committed(ok, 0.4)                                   # rank 0 formats
    b.committed(ok, 0.4, committed_rows(ok, 0.4))          # the worker did
    a.close(), b.close()
    rows = [(d / "logs" / "sys" / "processed_mini_batches.csv").read_text() for d in (tmp_path / "a", tmp_path / "b")]
    assert rows[0] == rows[1]
    shares = [float(r[12]) for r in list(csv.reader(io.StringIO(rows[0])))[1:]]
    assert shares == [0.3, 0.1]                            # the flush's write time, shared by bytes
    assert "1 item failed" in (tmp_path / "b" / "logs" / "job_error.txt").read_text()
