"""Tabular slicing and reading: every row in exactly one slice, for every format and edge case."""
from __future__ import annotations

import json
import random

import fsspec
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from httpkit import serve
from prs_mpi import csvsplit, tabular
from prs_mpi.tabular import (SliceReadError, TabularSlice, detect_format, iter_partitions,
                             iter_slices, parse_size, read_slice)

TEXTS = ["plain", 'say "hi"', "two\nlines", "crlf\r\ninside", "a,b", "", " ", '""', '"',
         "x" * 40, "ünïcödé", "end\n"]


def _random_csv(rng: random.Random, crlf: bool, trailing: bool, nrows: int) -> bytes:
    newline = "\r\n" if crlf else "\n"
    lines = ["id,text,value"]
    for i in range(nrows):
        text = rng.choice(TEXTS)
        quoted = '"' + text.replace('"', '""') + '"'
        needs_quotes = any(c in text for c in ',"\r\n') or rng.random() < 0.3
        lines.append(f"{i},{quoted if needs_quotes else text},{rng.randint(-99, 99)}")
    body = newline.join(lines)
    return (body + newline if trailing else body).encode()


def _slices(path, fmt, max_bytes, options=None):
    return list(iter_slices(str(path), fmt, max_bytes, options or {}))


def _check_contiguous(slices, size):
    assert slices[0].start == 0 and slices[-1].stop == size
    for left, right in zip(slices, slices[1:]):
        assert left.stop == right.start and left.start < left.stop


def _as_text(frames, columns):
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return frame.astype(str).reset_index(drop=True)


@pytest.mark.parametrize("seed", range(12))
def test_csv_every_row_in_exactly_one_slice(tmp_path, seed):
    rng = random.Random(seed)
    crlf, trailing = seed % 2 == 1, seed % 3 != 0
    data = _random_csv(rng, crlf, trailing, rng.randint(1, 120))
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    options = {"dtype": str, "keep_default_na": False}
    expected = pd.read_csv(path, **options)
    for max_bytes in (1, rng.randint(2, 60), rng.randint(61, 400), len(data) - 1):
        slices = _slices(path, "csv", max_bytes, options)
        _check_contiguous(slices, len(data))
        got = _as_text([read_slice(s, options) for s in slices], expected.columns)
        pd.testing.assert_frame_equal(got, expected.astype(str))
        assert len(slices) > 1 or max_bytes >= len(data) - 1


def test_csv_split_into_many_slices_when_records_are_small(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(1000)))
    slices = _slices(path, "csv", 100)
    assert len(slices) > 50
    frames = [read_slice(s, {}) for s in slices]
    assert all(list(f.columns) == ["a", "b"] for f in frames)  # header kept for every split
    assert pd.concat(frames).a.tolist() == list(range(1000))


def test_csv_quoted_newlines_across_every_split_point(tmp_path):
    # Long multi-line quoted fields make many split targets fall inside quotes.
    body = "".join(f'{i},"line one\nline, two\n""three""\n",{i}\n' for i in range(80))
    path = tmp_path / "q.csv"
    path.write_text("id,note,copy\n" + body)
    for max_bytes in range(7, 90, 17):
        frames = [read_slice(s, {}) for s in _slices(path, "csv", max_bytes)]
        got = pd.concat(frames, ignore_index=True)
        assert got.id.tolist() == list(range(80)) and (got.id == got["copy"]).all()
        assert set(got.note) == {'line one\nline, two\n"three"\n'}


def test_csv_quote_free_file_uses_fast_path(tmp_path, monkeypatch):
    path = tmp_path / "plain.csv"
    path.write_text("a\n" + "1\n" * 5000)
    calls = []
    original = csvsplit._advance
    monkeypatch.setattr(csvsplit, "_advance", lambda *a: calls.append(a) or original(*a))
    assert len(_slices(path, "csv", 64)) > 100
    assert len(calls) == 2  # the header "a\n" only: no tokenizing where no quote is near


def test_csv_quoted_field_longer_than_scan_window_fails_loudly(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("a,b\n1,\"" + "x\n" * 200 + "\"\n2,y\n")
    options = {"csv_scan_bytes": 16}
    slices = _slices(path, "csv", 50, options)
    with pytest.raises(SliceReadError, match=r"long\.csv bytes 0-"):
        for s in slices:
            read_slice(s, options)


def test_csv_tsv_header_options_and_blank_leading_lines(tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("\n\nk\tv\n" + "".join(f"{i}\t{i}\n" for i in range(300)))
    got = pd.concat(read_slice(s, {}) for s in _slices(tsv, "csv", 64))
    assert list(got.columns) == ["k", "v"] and got.k.tolist() == list(range(300))
    raw = tmp_path / "noheader.csv"
    raw.write_text("# comment line\n" + "".join(f"{i};{i}\n" for i in range(300)))
    options = {"header": False, "sep": ";", "skiprows": 1, "names": ["x", "y"]}
    got = pd.concat(read_slice(s, options) for s in _slices(raw, "csv", 64, options))
    assert got.x.tolist() == list(range(300))


def test_csv_unsplittable_options_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("a\n" + "1\n" * 100)
    with pytest.raises(ValueError, match="mini_batch_size"):
        _slices(path, "csv", 10, {"skipfooter": 1})
    with pytest.raises(ValueError, match="cannot be split with separator"):
        _slices(path, "csv", 10, {"sep": r"\s+"})
    assert len(_slices(path, "csv", 10_000, {"skipfooter": 1})) == 1  # small file: fine


def test_empty_and_header_only_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert _slices(empty, "csv", 10) == []
    header = tmp_path / "header.csv"
    header.write_text("a,b,c\n")
    slices = _slices(header, "csv", 2)
    assert len(slices) == 1
    frame = read_slice(slices[0], {})
    assert frame.empty and list(frame.columns) == ["a", "b", "c"]


def test_malformed_csv_row_names_file_and_range(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n" + "1,2\n" * 50 + "1,2,3,4\n" + "1,2\n" * 50)
    errors = []
    for s in _slices(path, "csv", 100):
        try:
            read_slice(s, {})
        except SliceReadError as exc:
            errors.append((s, str(exc)))
    assert len(errors) == 1
    s, message = errors[0]
    assert f"bad.csv bytes {s.start}-{s.stop}" in message and "Expected 2 fields" in message


def test_compressed_csv_is_one_slice(tmp_path):
    path = tmp_path / "z.csv.gz"
    pd.DataFrame({"a": range(500)}).to_csv(path, index=False)
    slices = _slices(path, detect_format(str(path)), 10)
    assert len(slices) == 1 and read_slice(slices[0], {}).a.tolist() == list(range(500))


@pytest.mark.parametrize("seed", range(6))
def test_jsonl_every_row_in_exactly_one_slice(tmp_path, seed):
    rng = random.Random(100 + seed)
    records = [{"i": i, "t": rng.choice(TEXTS)} for i in range(rng.randint(1, 150))]
    newline = "\r\n" if seed % 2 else "\n"
    text = newline.join(json.dumps(r) for r in records) + (newline if seed % 3 else "")
    path = tmp_path / "r.jsonl"
    path.write_text(text, newline="")
    size = path.stat().st_size
    for max_bytes in (1, rng.randint(2, 200), size - 1):
        slices = _slices(path, "jsonl", max_bytes)
        _check_contiguous(slices, size)
        got = pd.concat([read_slice(s, {}) for s in slices], ignore_index=True)
        assert got.to_dict("records") == records


def _write_parquet(path, nrows, row_group_size):
    frame = pd.DataFrame({"id": np.arange(nrows), "x": np.random.default_rng(0).random(nrows),
                          "s": [f"row {i}" for i in range(nrows)]})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path,
                   row_group_size=row_group_size)
    return frame


@pytest.mark.parametrize("seed", range(5))
def test_parquet_every_row_in_exactly_one_slice(tmp_path, seed):
    rng = random.Random(200 + seed)
    path = tmp_path / "p.parquet"
    frame = _write_parquet(path, rng.randint(1, 3000), rng.randint(1, 700))
    for max_bytes in (rng.randint(50, 500), rng.randint(500, 5000), rng.randint(5000, 60000),
                      10**9):
        slices = _slices(path, "parquet", max_bytes)
        got = pd.concat([read_slice(s, {}) for s in slices], ignore_index=True)
        pd.testing.assert_frame_equal(got, frame)
        assert sum(s.nrows for s in slices) == len(frame)


def test_parquet_single_row_group_is_split_by_rows(tmp_path):
    path = tmp_path / "one.parquet"
    frame = _write_parquet(path, 10_000, 10_000)
    slices = _slices(path, "parquet", 20_000)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    assert len(slices) > 3 and {s.unit for s in slices} == {"rows"}
    got = pd.concat([read_slice(s, {"columns": ["id"]}) for s in slices], ignore_index=True)
    assert got.id.tolist() == frame.id.tolist() and list(got.columns) == ["id"]


def test_parquet_row_ranges_resume_instead_of_decoding_again(tmp_path, monkeypatch):
    path = tmp_path / "big.parquet"
    frame = _write_parquet(path, 50_000, 50_000)
    slices = _slices(path, "parquet", 20_000)
    assert len(slices) > 20
    opened = []
    real = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches",
                        lambda self, *a, **kw: opened.append(1) or real(self, *a, **kw))
    every_other = slices[::2] + slices[1::2]  # what one of two workers sees, then the other
    got = {s.start: read_slice(s, {}) for s in every_other}
    assert len(opened) == 2  # one decode of the row group per pass, not one per slice
    assert pd.concat([got[s.start] for s in slices], ignore_index=True).equals(frame)
    backwards = [read_slice(s, {"columns": ["s"]}) for s in reversed(slices[:3])]
    assert pd.concat(backwards[::-1]).s.tolist() == frame.s[:slices[2].stop].tolist()


def test_parquet_row_ranges_of_one_file_share_one_open_file(tmp_path, monkeypatch):
    path, other = tmp_path / "groups.parquet", tmp_path / "other.parquet"
    frame = _write_parquet(path, 6000, 1000)
    _write_parquet(other, 2000, 2000)
    slices, elsewhere = _slices(path, "parquet", 5_000), _slices(other, "parquet", 5_000)[1]
    assert len({s.row_group for s in slices}) == 6 and all(s.unit == "rows" for s in slices)
    opened = []
    real = tabular._parquet_file
    monkeypatch.setattr(tabular, "_parquet_file", lambda p: opened.append(p) or real(p))
    got = [read_slice(s, {}) for s in slices[1::2] + slices[::2]]  # every group, twice
    assert opened == [str(path)]
    assert sorted(pd.concat(got).id) == list(range(6000))
    assert len(read_slice(elsewhere, {})) == elsewhere.nrows
    assert read_slice(slices[0], {}).equals(frame.iloc[:slices[0].stop])
    assert opened == [str(path), str(other), str(path)]


def test_truncated_parquet_fails_only_its_mini_batch(tmp_path):
    path = tmp_path / "cut.parquet"
    _write_parquet(path, 1000, 100)
    path.write_bytes(path.read_bytes()[:-100])
    slices = _slices(path, "parquet", 1000)
    assert slices == [TabularSlice(str(path), "parquet", 0, -1, "row_group")]
    with pytest.raises(SliceReadError, match=r"cut\.parquet row groups 0-end"):
        read_slice(slices[0], {})


def _write_hdf5(path, nrows):
    rows = np.zeros(nrows, dtype=[("id", "i8"), ("x", "f4"), ("name", "S8"), ("v", "f4", (2,))])
    rows["id"], rows["x"] = np.arange(nrows), np.arange(nrows) / 2
    rows["name"] = [f"n{i % 7}".encode() for i in range(nrows)]
    with h5py.File(path, "w") as h5:
        h5.create_dataset("/group/table", data=rows)
        h5.create_dataset("/matrix", data=np.arange(nrows * 3).reshape(nrows, 3))
    return rows


def test_hdf5_compound_rows_become_columns(tmp_path):
    path = tmp_path / "d.h5"
    rows = _write_hdf5(path, 1001)
    options = {"hdf5_dataset": "/group/table"}
    slices = _slices(path, "hdf5", 37 * rows.dtype.itemsize + 5, options)
    assert [s.nrows for s in slices][:1] == [37] and sum(s.nrows for s in slices) == 1001
    got = pd.concat([read_slice(s, options) for s in slices], ignore_index=True)
    assert got.id.tolist() == list(range(1001)) and got.name[8] == "n1"
    assert list(got.columns) == ["id", "x", "name", "v"] and len(got.v[3]) == 2
    matrix = pd.concat(read_slice(s, {"hdf5_dataset": "matrix"})
                       for s in _slices(path, "hdf5", 100, {"hdf5_dataset": "matrix"}))
    assert matrix.shape == (1001, 3) and matrix[2].iloc[-1] == 1001 * 3 - 1


def test_hdf5_dataset_choice_and_broken_file(tmp_path):
    path = tmp_path / "two.h5"
    _write_hdf5(path, 10)
    with pytest.raises(SliceReadError, match="hdf5_dataset"):
        read_slice(TabularSlice(str(path), "hdf5", 0, 5, "rows"), {})
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not an hdf5 file" * 10)
    slices = _slices(broken, "hdf5", 100)
    assert len(slices) == 1 and slices[0].stop == -1
    with pytest.raises(SliceReadError, match=r"broken\.h5 rows 0-end"):
        read_slice(slices[0], {})


def test_parse_size_and_detect_format():
    assert parse_size(1024) == parse_size("1KB") == parse_size("1 kib") == 1024
    assert parse_size("10MB") == 10 * 1024**2 and parse_size("1.5GB") == int(1.5 * 1024**3)
    for bad in ("ten", "0", -1, "5 parsecs", True):
        with pytest.raises(ValueError):
            parse_size(bad)
    cases = {"a.csv": "csv", "a.TSV": "csv", "b.ndjson": "jsonl", "c.json": "jsonl",
             "d.pq": "parquet", "s3://b/e.parquet": "parquet", "f.hdf5": "hdf5",
             "g.csv.gz": "csv", "h.txt": "csv"}
    assert {p: detect_format(p, None) for p in cases} == cases
    assert detect_format("x.dat", "CSV") == "csv"
    with pytest.raises(ValueError, match=r"x\.dat.*\[input\]\.format"):
        detect_format("x.dat", None)
    with pytest.raises(ValueError, match="excel"):
        detect_format("x.csv", "excel")


def _partition_union(partitions, options):
    return pd.concat([read_slice(s, options) for _, slices in partitions for s in slices],
                     ignore_index=True)


def test_csv_partitions_cover_every_row_once(tmp_path):
    rng = random.Random(7)
    frames = []
    for n in range(3):
        frame = pd.DataFrame({"id": range(n * 1000, n * 1000 + 400),
                              "STATE": [rng.choice(["CA", "NY", None]) for _ in range(400)],
                              "YEAR": [rng.choice(["01", "2020", "2021"]) for _ in range(400)]})
        frame.to_csv(tmp_path / f"part{n}.csv", index=False)
        frames.append(frame)
    paths = [str(tmp_path / f"part{n}.csv") for n in range(3)]
    partitions = list(iter_partitions(paths, None, ["STATE", "YEAR"], {}))
    keys = [tuple(kv.values()) for kv, _ in partitions]
    assert len(keys) == len(set(keys)) == 9 and ("CA", "01") in keys and (None, "2021") in keys
    for kv, slices in partitions:
        frame = pd.concat([read_slice(s, {}) for s in slices])
        assert len(frame) == sum(s.nrows for s in slices) > 0
        assert (frame.YEAR == kv["YEAR"]).all()
    got = _partition_union(partitions, {})
    assert sorted(got.id) == sorted(pd.concat(frames).id)


def test_partition_scan_reads_only_key_columns_in_chunks(tmp_path, monkeypatch):
    path = tmp_path / "k.csv"
    pd.DataFrame({"k": [1, 2] * 50, "big": ["x" * 100] * 100}).to_csv(path, index=False)
    seen = []
    original = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda *a, **kw: seen.append(kw) or original(*a, **kw))
    assert [kv for kv, _ in iter_partitions([str(path)], None, ["k"], {})] == [{"k": "1"},
                                                                                {"k": "2"}]
    assert seen[0]["usecols"] == ["k"] and seen[0]["chunksize"] > 0


def test_parquet_jsonl_hdf5_and_hive_partitions(tmp_path):
    frame = pd.DataFrame({"id": range(600), "g": [i % 3 for i in range(600)]})
    pq.write_table(pa.Table.from_pandas(frame), tmp_path / "p.parquet", row_group_size=100)
    frame.to_json(tmp_path / "j.jsonl", orient="records", lines=True)
    rows = _write_hdf5(tmp_path / "h.h5", 300)
    for path, fmt, key, options, total in [
            (tmp_path / "p.parquet", None, "g", {}, 600),
            (tmp_path / "j.jsonl", None, "g", {}, 600),
            (tmp_path / "h.h5", None, "name", {"hdf5_dataset": "group/table"}, len(rows))]:
        partitions = list(iter_partitions([str(path)], fmt, [key], options))
        assert all((read_slice(s, options)[key] == kv[key]).all()
                   for kv, slices in partitions for s in slices)
        assert len(_partition_union(partitions, options)) == total
    assert [kv["g"] for kv, _ in iter_partitions([str(tmp_path / "p.parquet")], None, ["g"], {})
            ] == [0, 1, 2]
    for state in ("CA", "NY"):
        (tmp_path / f"STATE={state}").mkdir()
        frame.to_csv(tmp_path / f"STATE={state}" / "x.csv", index=False)
    hive = [str(tmp_path / f"STATE={s}" / "x.csv") for s in ("NY", "CA")]
    partitions = list(iter_partitions(hive, None, ["STATE"], {}))
    assert [kv for kv, _ in partitions] == [{"STATE": "CA"}, {"STATE": "NY"}]
    assert partitions[0][1][0].filter is None and len(read_slice(partitions[0][1][0], {})) == 600


def test_partition_key_missing_names_file(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a\n1\n")
    with pytest.raises(ValueError, match=r"m\.csv"):
        list(iter_partitions([str(path)], None, ["nope"], {}))


def test_memory_url_split_and_read():
    fs = fsspec.filesystem("memory")
    data = _random_csv(random.Random(3), False, True, 200)
    fs.pipe("/tab/t.csv", data)
    slices = _slices("memory://tab/t.csv", "csv", 300)
    _check_contiguous(slices, len(data))
    got = pd.concat([read_slice(s, {}) for s in slices], ignore_index=True)
    assert got.id.tolist() == list(range(200))
    fs.rm("/tab", recursive=True)


def test_http_parquet_and_csv_ranges(tmp_path):
    _write_parquet(tmp_path / "p.parquet", 2000, 300)
    (tmp_path / "c.csv").write_text("a\n" + "".join(f"{i}\n" for i in range(100_000)))
    with serve(tmp_path) as (base, server):
        slices = _slices(f"{base}/p.parquet", "parquet", 5000)
        assert len(slices) > 1
        assert pd.concat(read_slice(s, {}) for s in slices).id.tolist() == list(range(2000))
        slices = _slices(f"{base}/c.csv", "csv", 100_000)
        assert pd.concat(read_slice(s, {}) for s in slices).a.tolist() == list(range(100_000))
        server.served.clear()
        assert len(read_slice(slices[3], {})) > 10_000
        assert sum(server.served) < 100_000 + 8 * 1024  # the range and a header scan, no read-ahead


def test_slice_describe_redacts_credentials():
    s = TabularSlice("https://user:pw@host/x.csv?sig=abc", "csv", 0, 10, "bytes",
                     filter=(("k", "v"),))
    assert s.describe() == "https://host/x.csv?REDACTED bytes 0-10 where k='v'"
    with pytest.raises(SliceReadError) as info:
        read_slice(TabularSlice("memory://nope/x.csv?sig=abc", "csv", 0, 10, "bytes"), {})
    assert "sig=abc" not in str(info.value) and "x.csv" in str(info.value)


def test_read_slice_streams_only_its_range(tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    path.write_text("a\n" + "1\n" * 1_000_000)
    slices = _slices(path, "csv", 600_000)
    reads = []

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            reads.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    original = tabular.open_binary
    monkeypatch.setattr(tabular, "open_binary", lambda *a, **k: Counting(original(*a, **k)))
    s = slices[2]
    assert len(read_slice(s, {})) == (s.stop - s.start) // 2
    assert s.stop - s.start <= sum(reads) < s.stop - s.start + 2 * csvsplit._CHUNK
    assert max(reads) < (s.stop - s.start) // 2  # parsed as it streams, never held whole


def test_range_reader_prefix_range_and_blank_check(tmp_path):
    path = tmp_path / "b.bin"
    path.write_bytes(b"0123456789" + b" \n" * 50_000 + b"x\n")
    with open(path, "rb") as f:
        r = csvsplit.RangeReader(b"HEAD", f, 2, 8)
        assert not r.blank() and r.read(3) == b"HEA" and r.read(100) == b"D234567"
        assert r.read(5) == b"" and r.read() == b""
        r = csvsplit.RangeReader(b"", f, 10, 10 + 100_000)
        assert r.blank() and r.read() == b" \n" * 50_000  # all of it read back
        r = csvsplit.RangeReader(b"\n", f, 10, None)
        buffer = bytearray(4)
        assert not r.blank() and r.readinto(buffer) == 4 and buffer == b"\n \n "
        assert r.read().endswith(b" \nx\n")


def test_csv_slices_with_blank_runs_encoding_and_no_trailing_newline(tmp_path):
    path = tmp_path / "l.csv"
    rows = "".join(f"{i},caf\u00e9 {i}\n" for i in range(3000))
    path.write_bytes(("k,name\n" + "\n" * 70_000 + rows).rstrip("\n").encode("latin-1"))
    options = {"encoding": "latin-1"}
    slices = _slices(path, "csv", 20_000, options)
    frames = [read_slice(s, options) for s in slices]
    assert frames[0].empty and list(frames[0].columns) == ["k", "name"]
    got = pd.concat(frames, ignore_index=True)
    assert got.k.tolist() == list(range(3000)) and got.name[2999] == "caf\u00e9 2999"
    blank = tmp_path / "blank.csv"
    blank.write_text(" \n" * 50_000)
    assert all(read_slice(s, {}).empty for s in _slices(blank, "csv", 30_000))


def _cfg(job_dir, paths, fmt=None, keys=(), options=None, size=4096):
    from types import SimpleNamespace
    inp = SimpleNamespace(paths=tuple(paths), format=fmt, options=options or {}, hdf5_dataset=None)
    return SimpleNamespace(input=inp, partition_keys=tuple(keys), mini_batch_size=size,
                           job_file=str(job_dir / "job.toml"))


def test_iter_tabular_batches_slices_and_partitions(tmp_path):
    frame = pd.DataFrame({"id": range(3000), "g": [i % 4 for i in range(3000)]})
    frame.iloc[:1500].to_csv(tmp_path / "a.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame.iloc[1500:], preserve_index=False),
                   tmp_path / "b.parquet", row_group_size=200)
    (tmp_path / "inputs.txt").write_text("a.csv\nb.parquet\n")
    batches = list(tabular.iter_tabular_batches(_cfg(tmp_path, ["@inputs.txt"])))
    assert len(batches) > 4 and all(part is None for _, _, part, _ in batches)
    assert {s.path for _, s, _, _ in batches} == {str(tmp_path / "a.csv"), str(tmp_path / "b.parquet")}
    ids = pd.concat(read_slice(s, {}) for _, s, _, _ in batches).id
    assert sorted(ids) == list(range(3000))
    parts = list(tabular.iter_tabular_batches(_cfg(tmp_path, ["@inputs.txt"], keys=["g"])))
    # CSV keys are text, Parquet keys typed: mixing formats gives separate partitions
    assert [p for _, _, p, _ in parts] == [{"g": 0}, {"g": 1}, {"g": 2}, {"g": 3}, {"g": "0"},
                                           {"g": "1"}, {"g": "2"}, {"g": "3"}]
    for nitems, slices, _, shown in parts:
        assert nitems == len(read_slice(slices, {})) > 0 and "where g=" in shown
