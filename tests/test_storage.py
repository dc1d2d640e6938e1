"""Listing and fetching: local globs, listing files, memory://, HTTP and S3 servers on loopback."""
from __future__ import annotations

import glob
import logging
import multiprocessing
import os
import socket
import time

import fsspec
import pytest

from httpkit import serve
from prs_mpi import storage
from prs_mpi.storage import (FetchError, fetch, fetch_batch, fetch_once_per_node, iter_files,
                             redact, redact_text)

TREE = ["a.csv", "b.csv", "c.txt", ".hidden.csv", "x1.csv", "x2.csv", "sub/d.csv",
        "sub/deeper/e.csv", "sub2/f.csv", ".git/config"]


@pytest.fixture
def tree(tmp_path):
    for name in TREE:
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    return tmp_path


def _rel(paths, root):
    return [os.path.relpath(p, root) for p in paths]


def test_local_directory_is_recursive_sorted_and_skips_hidden(tree):
    got = _rel(iter_files(["data"], str(tree)), tree / "data")
    assert got == ["a.csv", "b.csv", "c.txt", "x1.csv", "x2.csv", "sub/d.csv",
                   "sub/deeper/e.csv", "sub2/f.csv"]
    assert all(os.path.isabs(p) for p in iter_files(["data"], str(tree)))


@pytest.mark.parametrize("pattern", ["data/*.csv", "data/**/*.csv", "data/x?.csv",
                                     "data/[ab].csv", "data/*/*.csv", "data/**/e.csv",
                                     "data/.*.csv", "data/sub*/**/*.csv", "data/sub/deeper/*"])
def test_local_globs_match_python_glob(tree, pattern):
    got = list(iter_files([pattern], str(tree)))
    expected = [p for p in glob.glob(str(tree / pattern), recursive=True) if os.path.isfile(p)]
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    assert got == list(iter_files([pattern], str(tree)))  # deterministic


def test_local_glob_order_is_per_directory_sorted(tree):
    got = _rel(iter_files(["data/**/*.csv"], str(tree)), tree / "data")
    assert got == ["a.csv", "b.csv", "x1.csv", "x2.csv", "sub/d.csv", "sub/deeper/e.csv",
                   "sub2/f.csv"]


def test_listing_file_and_file_urls(tree):
    (tree / "list.txt").write_text("# inputs\n\ndata/b.csv\n  data/sub/*.csv  \n"
                                   f"file://{tree}/data/a.csv\n")
    got = _rel(iter_files(["@list.txt", "data/c.txt"], str(tree)), tree / "data")
    assert got == ["b.csv", "sub/d.csv", "a.csv", "c.txt"]
    (tree / "nested.txt").write_text("@list.txt\n")
    with pytest.raises(ValueError, match="nested"):
        list(iter_files(["@nested.txt"], str(tree)))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        list(iter_files(["@missing.txt"], str(tree)))
    assert list(iter_files(["data/c.txt"], str(tree))) == [str(tree / "data" / "c.txt")]
    (tree / "run[1]").mkdir()
    (tree / "run[1]" / "literal.csv").write_text("x")
    assert _rel(iter_files(["run[1]", "run[1]/literal.csv"], str(tree)), tree) == [
        "run[1]/literal.csv", "run[1]/literal.csv"]  # existing names are not globs


def test_pattern_matching_nothing_raises_after_earlier_matches(tree):
    files = iter_files(["data/a.csv", "data/*.parquet"], str(tree))
    assert next(files).endswith("a.csv")
    with pytest.raises(FileNotFoundError, match=r"'data/\*\.parquet' matched no files"):
        next(files)


def test_listing_is_lazy_per_directory(tmp_path, monkeypatch):
    for d in range(30):
        for f in range(2):
            (tmp_path / f"d{d:02d}").mkdir(exist_ok=True)
            (tmp_path / f"d{d:02d}" / f"f{f}.bin").write_bytes(b"")
    calls = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: calls.append(p) or real(p))
    files = iter_files([str(tmp_path)])
    assert next(files).endswith("d00/f0.bin") and len(calls) == 2
    assert len(list(files)) == 59 and len(calls) == 31
    calls.clear()
    files = iter_files([str(tmp_path / "**" / "f1.bin")])
    assert next(files).endswith("d00/f1.bin") and len(calls) <= 3


def test_listing_file_entries_cost_one_stat_each_and_feed_the_fingerprint(tree, monkeypatch):
    from prs_mpi.dataset import InputFingerprint
    names = ["data/a.csv", "data/b.csv", "data/sub/d.csv"]
    (tree / "list.txt").write_text("\n".join(names) + "\n")
    stats = []
    real = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: stats.append(p) or real(p, *a, **k))
    fed = InputFingerprint()
    got = list(iter_files(["@list.txt"], str(tree), fed.add))
    assert got == [str(tree / n) for n in names] and stats == got      # one stat per entry, reused
    monkeypatch.setattr(os, "stat", real)
    fresh = InputFingerprint()                  # the same files stat-ed anew: the same digest
    for path in got:
        fresh.add(path)
    assert fed.files == 3 and fed.hexdigest() == fresh.hexdigest()
    (tree / "data" / "b.csv").write_text("longer than before")
    again = InputFingerprint()
    list(iter_files(["@list.txt"], str(tree), again.add))
    assert again.hexdigest() != fed.hexdigest()


def test_memory_urls_dirs_and_globs():
    fs = fsspec.filesystem("memory")
    for name in ("z.csv", "a.csv", "sub/b.csv", "sub/c.json"):
        fs.pipe(f"/prs-listing/{name}", b"x")
    try:
        url = fs.unstrip_protocol  # memory:///prs-listing/...: the store's own spelling
        assert list(iter_files(["memory://prs-listing"])) == [
            url("/prs-listing/a.csv"), url("/prs-listing/z.csv"), url("/prs-listing/sub/b.csv"),
            url("/prs-listing/sub/c.json")]
        assert list(iter_files(["memory://prs-listing/**/*.csv"])) == [
            url("/prs-listing/a.csv"), url("/prs-listing/z.csv"), url("/prs-listing/sub/b.csv")]
        assert list(iter_files(["memory://prs-listing/sub/c.json"])) == [
            "memory://prs-listing/sub/c.json"]
        with pytest.raises(FileNotFoundError, match="nothing"):
            list(iter_files(["memory://prs-listing/nothing*"]))
    finally:
        fs.rm("/prs-listing", recursive=True)


def test_redact_removes_credentials_and_tokens():
    url = "https://alice:s3cret@host.example/path/f.csv?sig=tok&se=2030"
    assert redact(url) == "https://host.example/path/f.csv?REDACTED"
    assert redact("/local/path?x") == "/local/path?x"
    text = redact_text(f"GET {url} failed; retry host.example/path/f.csv?sig=tok", url)
    assert "s3cret" not in text and "tok" not in text and "host.example/path/f.csv" in text


# ---------------------------------------------------------------------------- HTTP


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    with serve(root) as (base, server):
        yield base, root, server.requests, server.slow


def _gets(requests, path):
    return sum(1 for method, p in requests if method == "GET" and p == path)


def test_http_listing_and_fetch(http_root, tmp_path):
    base, root, requests, slow = http_root
    for name in ("data/a.csv", "data/b.csv", "data/sub/c.csv"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name * 3)
    assert list(iter_files([f"{base}/data/"])) == [f"{base}/data/a.csv", f"{base}/data/b.csv",
                                                   f"{base}/data/sub/c.csv"]
    assert list(iter_files([f"{base}/data/a.csv"])) == [f"{base}/data/a.csv"]
    assert _gets(requests, "/data/a.csv") == 0  # a file URL is not downloaded to list it
    assert list(iter_files([f"{base}/data/*.csv"])) == [f"{base}/data/a.csv", f"{base}/data/b.csv"]
    local = fetch(f"{base}/data/b.csv", str(tmp_path / "dl"))
    assert os.path.basename(local) == "b.csv" and open(local).read() == "data/b.csv" * 3


def test_fetch_missing_url_fails_at_once_and_unreachable_after_retries(http_root, tmp_path):
    base, _, requests, _ = http_root
    t0 = time.monotonic()
    with pytest.raises(FetchError, match=r"after 1 try: FileNotFoundError"):
        fetch(f"{base}/nope.csv", str(tmp_path), backoff=5.0)
    assert time.monotonic() - t0 < 5.0
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://bob:hunter2@127.0.0.1:{port}/x.csv?token=abc123"
    t0 = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch(url, str(tmp_path), backoff=0.05)
    message = str(info.value)
    assert time.monotonic() - t0 >= 0.05 + 0.1  # two back-off sleeps: 0.05 s, then 0.1 s
    assert f"http://127.0.0.1:{port}/x.csv?REDACTED after 3 tries" in message
    assert "hunter2" not in message and "abc123" not in message and "bob" not in message


def _fetch_in_child(url, cache_dir, queue):
    queue.put(fetch_once_per_node(url, cache_dir))


def test_fetch_once_per_node_downloads_once_across_processes(http_root, tmp_path):
    base, root, requests, slow = http_root
    (root / "model.bin").write_bytes(b"weights-v1" * 1000)
    slow.add("/model.bin")
    cache = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_fetch_in_child, args=(f"{base}/model.bin", cache, queue))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    paths = {queue.get(timeout=60) for _ in procs}
    for proc in procs:
        proc.join(30)
    assert len(paths) == 1 and _gets(requests, "/model.bin") == 1
    path = paths.pop()
    assert open(path, "rb").read() == b"weights-v1" * 1000
    assert fetch_once_per_node(f"{base}/model.bin", cache) == path  # cached: no new GET
    assert _gets(requests, "/model.bin") == 1
    (root / "model.bin").write_bytes(b"weights-v2")  # changed size: a new version
    newer = fetch_once_per_node(f"{base}/model.bin", cache)
    assert newer != path and open(newer, "rb").read() == b"weights-v2"


def test_fetch_once_per_node_directory_and_fetch_batch(http_root, tmp_path):
    base, root, _, _ = http_root
    for name in ("vocab/words.txt", "vocab/extra/more.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    local = fetch_once_per_node(f"{base}/vocab/", str(tmp_path / "cache"))
    assert open(os.path.join(local, "extra", "more.txt")).read() == "vocab/extra/more.txt"
    mine = tmp_path / "mine.txt"
    mine.write_text("local")
    paths, cleanup = fetch_batch([f"{base}/vocab/words.txt", str(mine)], str(tmp_path / "scr"))
    assert open(paths[0]).read() == "vocab/words.txt" and paths[1] == str(mine)
    cleanup()
    assert not os.path.exists(paths[0]) and mine.exists()
    assert fetch_batch([str(mine)])[0] == [str(mine)]


# ---------------------------------------------------------------------------- S3 (moto)


@pytest.fixture
def s3(monkeypatch):
    server_mod = pytest.importorskip("moto.server", reason="S3 tests need moto[server]")
    s3fs = pytest.importorskip("s3fs", reason="S3 tests need s3fs")
    boto3 = pytest.importorskip("boto3", reason="S3 tests need boto3")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"client_kwargs": {"endpoint_url": endpoint}})
    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="prs-bucket")
    yield client, s3fs
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_s3_listing_streams_pages_in_key_order(s3, monkeypatch):
    client, s3fs = s3
    for i in range(12):
        client.put_object(Bucket="prs-bucket", Key=f"data/{i:02d}.csv", Body=b"a\n1\n")
    client.put_object(Bucket="prs-bucket", Key="data/sub/z.csv", Body=b"a\n2\n")
    pages = []
    real = s3fs.S3FileSystem._call_s3

    async def small_pages(self, method, *args, **kwargs):
        if method == "list_objects_v2" and kwargs.get("Delimiter") == "":
            kwargs["MaxKeys"] = 5
            pages.append(kwargs.get("ContinuationToken"))
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", small_pages)
    files = iter_files(["s3://prs-bucket/data"])
    assert next(files) == "s3://prs-bucket/data/00.csv" and len(pages) == 1
    rest = list(files)
    assert rest[-1] == "s3://prs-bucket/data/sub/z.csv" and len(rest) == 12 and len(pages) == 3
    assert list(iter_files(["s3://prs-bucket/data/1*.csv"])) == [
        "s3://prs-bucket/data/10.csv", "s3://prs-bucket/data/11.csv"]
    with pytest.raises(FileNotFoundError, match="s3://prs-bucket/nothing"):
        list(iter_files(["s3://prs-bucket/nothing"]))


def test_s3_fetch_once_per_node_keys_by_etag(s3, tmp_path):
    client, _ = s3
    client.put_object(Bucket="prs-bucket", Key="models/m.bin", Body=b"v1")
    cache = str(tmp_path / "cache")
    first = fetch_once_per_node("s3://prs-bucket/models/m.bin", cache)
    assert open(first, "rb").read() == b"v1"
    assert fetch_once_per_node("s3://prs-bucket/models/m.bin", cache) == first
    client.put_object(Bucket="prs-bucket", Key="models/m.bin", Body=b"v2")
    second = fetch_once_per_node("s3://prs-bucket/models/m.bin", cache)
    assert second != first and open(second, "rb").read() == b"v2"
    assert len(os.listdir(cache)) == 6  # two entries, each with its directory, lock and record


def test_storage_module_has_no_mpi_import():
    assert "mpi4py" not in open(storage.__file__).read()


@pytest.mark.parametrize("path", ["/a/b", "/a/./b", "/a/../b", "//a", "/a/", "/", "/a/.h", "/a//b",
                                  "~/x", "rel/x", "../up", ""])
def test_local_path_is_abspath_of_path_joined_to_base(path):
    expected = os.path.abspath(os.path.join("/base/dir", os.path.expanduser(path)))
    assert storage.local_path(path, "/base/dir") == expected
