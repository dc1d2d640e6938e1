"""Lazy, deterministic input listing and remote fetches (local disk or any fsspec URL; no MPI).

Listing rules (``iter_files``):

* Patterns are expanded in the order given; each pattern's matches come out in a
  deterministic order: per directory, files sorted by name first, then each sub-directory
  (sorted) recursively.  S3 prefixes are streamed page by page in key order instead.
* A directory means every file below it, recursively.  Globs support ``*``, ``?``, ``[...]``
  and ``**`` (any number of directories) and match files only (a directory matched by a
  glob is not expanded: write ``dir/**`` for that).  Like the shell, names starting with
  ``.`` are skipped unless the pattern segment itself starts with ``.``; recursion does
  not follow symbolic links to directories.
* ``@PATH`` names a listing file (local path or URL): one path, URL or glob per line,
  blank lines and ``#`` comments ignored, relative entries resolved against ``base_dir``
  (not against the listing file).  Only the ``@`` prefix marks a listing: a ``.txt`` path
  is an input file like any other, because file-input jobs often process text files.
* A pattern matching nothing raises ``FileNotFoundError`` naming it (lazily, when the
  iteration reaches the end of that pattern).  Duplicates across patterns are kept.
* A path that exists is taken literally even if it holds glob characters (``run[1]/``).
  HTTP(S) has no directories: a URL ending in ``/`` is read as an index page of links,
  any other URL is a file (checked with a HEAD request, never downloaded to list it).
* Local results are absolute paths; ``file://`` URLs become local paths; other URLs keep
  their protocol (in the store's own spelling, e.g. ``memory:///a/b``).  Laziness: a directory's names are read in full (``os.scandir``, names
  only) and sorted before its first file is yielded (0.9 s for a flat directory of 200,000
  files on the 2-core dev machine); sub-directories are listed only when the iteration
  reaches them, so a large tree streams.

Remote reads (``fetch``, ``fetch_once_per_node``) retry ``FETCH_TRIES`` times with
exponential back-off; errors name the URL with credentials removed (``redact``).
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit


log = logging.getLogger(__name__)

FETCH_TRIES = 3
FETCH_BACKOFF_S = 0.5
_MAGIC = re.compile(r"[*?\[]")
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
T = TypeVar("T")
Seen = Callable[[str, "os.stat_result | None"], None]


def url_to_fs(url: str):
    """fsspec's (filesystem, path) for a URL. fsspec (and the asyncio it pulls in, ~10 MB of a
    worker rank's RSS) is imported only when a URL is really used, never for local input."""
    from fsspec.core import url_to_fs as to_fs
    return to_fs(url)


class FetchError(OSError):
    """A remote read failed (after retries); the message names the redacted URL and cause."""


# ---------------------------------------------------------------------------- URLs


def is_url(path: str) -> bool:
    """True for fsspec URLs other than ``file://`` (which are plain local paths)."""
    return ("://" in path or "::" in path) and not path.startswith("file://")


def local_path(path: str, base_dir: str = ".") -> str:
    """Absolute local path for a relative path, absolute path or ``file://`` URL."""
    if path[:1] == "/" and "/." not in path and "//" not in path and path[-1:] != "/":
        return path             # already absolute and normal (the lines of a big listing file)
    if path.startswith("file://"):
        path = unquote(urlsplit(path).path)
    return os.path.abspath(os.path.join(base_dir, os.path.expanduser(path)))


def redact(url: str) -> str:
    """``url`` without ``user:password@`` and with any query string replaced by ``REDACTED``."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "REDACTED" if parts.query else "", ""))


def redact_text(text: str, *urls: str) -> str:
    """``text`` with every URL in it passed through ``redact``, and the credentials and query
    strings of ``urls`` removed wherever they appear (libraries often echo stripped paths)."""
    text = _URL_RE.sub(lambda m: redact(m.group(0)), text)
    for url in urls:
        parts = urlsplit(url) if "://" in url else None
        if parts is None:
            continue
        secrets = [parts.query, *parts.query.split("&"), parts.netloc.rpartition("@")[0]]
        for secret in filter(None, secrets):
            text = text.replace(secret, "REDACTED")
    return text


def basename(path: str) -> str:
    """Last path segment of a local path or URL, query string excluded."""
    if "://" in path:
        path = urlsplit(path).path
    return path.rstrip("/").rsplit("/", 1)[-1] or "download"


# ---------------------------------------------------------------------------- reading


def open_binary(path: str, exact: bool = True) -> IO[bytes]:
    """Open a local path or fsspec URL for binary reading (seekable).

    ``exact`` turns off fsspec's read-ahead (5 MB blocks for HTTP and S3), so that reading a
    byte range fetches that range only; pass False for many small reads (HDF5 metadata)."""
    if not is_url(path):
        return open(local_path(path), "rb")
    fs, fpath = url_to_fs(path)
    return fs.open(fpath, "rb", **({"cache_type": "none"} if exact else {}))


def file_size(path: str) -> int:
    """Size in bytes of a local path or fsspec URL."""
    if not is_url(path):
        return os.path.getsize(local_path(path))
    fs, fpath = url_to_fs(path)
    size = fs.size(fpath)
    if size is None:
        raise OSError(f"{redact(path)}: the server reports no size; byte-range splitting needs it")
    return int(size)


# ---------------------------------------------------------------------------- listing


def iter_files(patterns: Iterable[str], base_dir: str = ".", seen: Seen | None = None) -> Iterator[str]:
    """Lazily expand paths, directories, globs, ``@listing`` files and URLs (see module doc).
    ``seen(path, stat)`` is called for each path before it is yielded, with the ``os.stat``
    result the listing already has (an existing file named as such) or None."""
    for pattern in patterns:
        if pattern.startswith("@"):
            yield from _iter_listing(pattern[1:], base_dir, seen)
        else:
            yield from _expand(pattern, base_dir, seen)


def _iter_listing(listing: str, base_dir: str, seen: Seen | None) -> Iterator[str]:
    if is_url(listing):
        fs, fpath = url_to_fs(listing)
        opener = fs.open(fpath, "rt", encoding="utf-8")
    else:
        try:
            opener = open(local_path(listing, base_dir), encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"listing file {listing!r} not found (resolved against {base_dir}); "
                "fix the '@' entry in [input].paths") from None
    with opener as lines:
        for line in lines:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if entry.startswith("@"):
                raise ValueError(f"listing file {redact(listing)!r} names another listing "
                                 f"{entry!r}; nested listings are not supported")
            yield from _expand(entry, base_dir, seen)


def _expand(pattern: str, base_dir: str, seen: Seen | None) -> Iterable[str]:
    if is_url(pattern):
        return _matches(pattern, base_dir, _expand_remote(pattern), seen)
    path = local_path(pattern, base_dir)
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):   # one file (a listing's usual line): one stat
        if seen is not None:
            seen(path, st)
        return (path,)
    # an existing directory wins over glob syntax: "run[1]/" is literal
    return _matches(pattern, base_dir, _walk_local(path) if st is not None else _glob_pattern(path), seen)


def _matches(pattern: str, base_dir: str, source: Iterator[str], seen: Seen | None) -> Iterator[str]:
    found = False
    for path in source:
        found = True
        if seen is not None:
            seen(path, None)
        yield path
    if not found:
        where = "" if is_url(pattern) else f" (resolved against {os.path.abspath(base_dir)})"
        raise FileNotFoundError(f"input pattern {redact(pattern)!r} matched no files{where}; "
                                "fix [input].paths")


def _glob_pattern(pattern: str) -> Iterator[str]:
    if not _MAGIC.search(pattern):
        return
    parts = pattern.split(os.sep)
    first = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    root = os.sep.join(parts[:first]) or os.sep
    if os.path.isdir(root):
        yield from _glob_local(root, parts[first:])


def _list_local(directory: str) -> tuple[list[str], list[str]]:
    """(files, directories) directly in ``directory``, each sorted; symlinked dirs count as dirs."""
    files, dirs = [], []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    (dirs if entry.is_dir() else files).append(entry.name)
                except OSError:
                    files.append(entry.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        log.warning("skipping unreadable directory %s: %s", directory, exc)
    files.sort()
    dirs.sort()
    return files, dirs


def _walk_local(directory: str) -> Iterator[str]:
    files, dirs = _list_local(directory)
    for name in files:
        if not name.startswith("."):
            yield os.path.join(directory, name)
    for name in dirs:
        sub = os.path.join(directory, name)
        if not name.startswith(".") and not os.path.islink(sub):
            yield from _walk_local(sub)


def _match(names: list[str], segment: str) -> Iterator[str]:
    hidden_ok = segment.startswith(".")
    for name in names:
        if (hidden_ok or not name.startswith(".")) and fnmatch.fnmatchcase(name, segment):
            yield name


def _glob_local(directory: str, segments: list[str]) -> Iterator[str]:
    segment, rest = segments[0], segments[1:]
    if segment == "**":
        if not rest:
            yield from _walk_local(directory)
            return
        yield from _glob_local(directory, rest)
        for name in _match(_list_local(directory)[1], "*"):
            sub = os.path.join(directory, name)
            if not os.path.islink(sub):
                yield from _glob_local(sub, segments)
        return
    if not _MAGIC.search(segment):
        path = os.path.join(directory, segment)
        if rest and os.path.isdir(path):
            yield from _glob_local(path, rest)
        elif not rest and os.path.isfile(path):
            yield path
        return
    files, dirs = _list_local(directory)
    for name in _match(dirs if rest else files, segment):
        path = os.path.join(directory, name)
        yield from (_glob_local(path, rest) if rest else (path,))


def _expand_remote(url: str) -> Iterator[str]:
    fs, path = url_to_fs(url)
    searchable = urlsplit(path).path if "://" in path else path  # http: '?' starts a query
    if _MAGIC.search(searchable):
        root, depth = _static_root(path)
        from fsspec.utils import glob_translate
        regex = re.compile(glob_translate(path))
        for name in _remote_files(fs, root, depth):
            if regex.match(name):
                yield fs.unstrip_protocol(name)
    elif "s3" in _protocols(fs):  # a HEAD, then a streamed listing (isdir would list it all)
        if fs.isfile(path):
            yield url
        else:
            yield from map(fs.unstrip_protocol, _s3_stream(fs, path))
    elif _is_dir(fs, path):
        yield from map(fs.unstrip_protocol, _remote_files(fs, path, None))
    elif _exists(fs, path):
        yield url


def _static_root(path: str) -> tuple[str, int | None]:
    """(non-glob leading directory, walk depth needed or None for unbounded)."""
    parts = path.split("/")
    first = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    if first == 0:
        raise ValueError(f"glob {redact(path)!r} has a wildcard in its first segment "
                         "(bucket or host); name the bucket or host literally")
    rest = parts[first:]
    return "/".join(parts[:first]), (None if "**" in rest else len(rest))


def _remote_files(fs, root: str, maxdepth: int | None) -> Iterator[str]:
    """Files below ``root``: S3 streams page by page; other stores walk one directory at a time."""
    root = root.rstrip("/")
    if maxdepth is None and "s3" in _protocols(fs):
        yield from _s3_stream(fs, root)
        return
    for dirpath, dirs, files in fs.walk(root, maxdepth=maxdepth, detail=False):
        dirs.sort()  # fsspec walks `dirs` after this yield: sorting here fixes the order
        for name in sorted(files):
            if name == "":  # root itself is a file
                yield dirpath
            elif not name.endswith("/"):
                yield f"{dirpath.rstrip('/')}/{name}"


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _exists(fs, path: str) -> bool:
    """Existence from metadata (a HEAD for HTTP, where fsspec's exists() sends a GET)."""
    try:
        fs.info(path)
        return True
    except FileNotFoundError:
        return False


def _is_dir(fs, path: str) -> bool:
    """HTTP(S) has no directories: a URL ending in '/' is an index page of links, anything else
    a file (asking fsspec would download the file to look for links in it)."""
    if {"http", "https"} & set(_protocols(fs)):
        return urlsplit(path).path.endswith("/")
    return fs.isdir(path)


def _s3_stream(fs, root: str) -> Iterator[str]:
    """All keys under ``root`` in key order, one list request per page of results."""
    from fsspec.asyn import sync

    bucket, _, key = root.partition("/")
    prefix = f"{key}/" if key else ""
    if not hasattr(fs, "_iterdir"):     # s3fs without page-wise listing: one (complete) find
        yield from fs.find(root)
        return
    pages = fs._iterdir(bucket, prefix=prefix, delimiter="")
    try:
        while True:
            try:
                info = sync(fs.loop, pages.__anext__)
            except StopAsyncIteration:
                return
            if info.get("type") == "file" and not info["name"].endswith("/"):
                yield info["name"]
    finally:
        sync(fs.loop, pages.aclose)


# ---------------------------------------------------------------------------- fetching


def retry(fn: Callable[[], T], url: str, tries: int = FETCH_TRIES,
          backoff: float = FETCH_BACKOFF_S) -> T:
    """Call ``fn`` up to ``tries`` times (sleep backoff, 2*backoff, ...); FetchError at the end."""
    for attempt in range(1, tries + 1):
        try:
            return fn()
        except _PERMANENT as exc:
            raise _fetch_error(url, exc, attempt) from None
        except Exception as exc:  # noqa: BLE001 - any transport error is retried
            if attempt == tries:
                raise _fetch_error(url, exc, attempt) from None
            delay = backoff * 2 ** (attempt - 1)
            log.warning("reading %s failed (try %d of %d: %s); retrying in %.1f s",
                        redact(url), attempt, tries, type(exc).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _fetch_error(url: str, exc: BaseException, attempts: int) -> FetchError:
    cause = redact_text(str(exc), url) or "no details"
    tries = "1 try" if attempts == 1 else f"{attempts} tries"
    return FetchError(f"cannot read {redact(url)} after {tries}: {type(exc).__name__}: {cause}; "
                      "check the URL, that the store is reachable, and its credentials "
                      "(fsspec configuration or environment)")


def fetch(url: str, dest_dir: str, tries: int = FETCH_TRIES,
          backoff: float = FETCH_BACKOFF_S) -> str:
    """Download a file or directory URL below ``dest_dir``; return its local path.

    The copy keeps its base name inside ``dest_dir/<hash of url>/`` so that equal names from
    different URLs never collide.  Local paths (and ``file://``) are returned unchanged.
    """
    if not is_url(url):
        return local_path(url)
    fs, path = url_to_fs(url)
    import hashlib
    target = os.path.join(dest_dir, hashlib.sha1(url.encode()).hexdigest()[:12], basename(url))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    retry(lambda: _download(fs, path, target), url, tries, backoff)
    return target


def _download(fs, path: str, target: str) -> None:
    """Copy file or directory ``path`` to ``target`` atomically (temporary name, then rename)."""
    tmp = f"{target}.part{os.getpid()}"
    _remove(tmp)
    try:
        if _is_dir(fs, path):
            os.makedirs(tmp)
            root = path.rstrip("/")
            for name in _remote_files(fs, root, None):
                local = os.path.join(tmp, *name[len(root) + 1:].split("/"))
                os.makedirs(os.path.dirname(local), exist_ok=True)
                fs.get_file(name, local)
        else:
            fs.get_file(path, tmp)
        _remove(target)
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def fetch_once_per_node(url: str, cache_dir: str, tries: int = FETCH_TRIES,
                        backoff: float = FETCH_BACKOFF_S) -> str:
    """Local copy of a side input or model URL, downloaded once per ``cache_dir``.

    The cache entry is keyed by the URL and the object's version (ETag, else size and
    modification time; for a directory, those of every file in it), so a changed object
    is fetched again.  An exclusive ``fcntl`` lock per entry makes concurrent callers on
    one node (ranks sharing a node-local ``cache_dir``) wait for a single download.
    Local paths are returned unchanged.  Old versions are not evicted.
    """
    if not is_url(url):
        return local_path(url)
    fs, path = url_to_fs(url)
    version = retry(lambda: _version(fs, path), url, tries, backoff)
    import hashlib
    key = hashlib.sha256(f"{url}\n{version}".encode()).hexdigest()[:24]
    entry = os.path.join(cache_dir, key)
    target = os.path.join(entry, basename(url))
    done = f"{entry}.json"
    os.makedirs(cache_dir, exist_ok=True)
    with _locked(f"{entry}.lock"):
        if os.path.exists(done) and os.path.lexists(target):
            log.debug("cache hit for %s in %s", redact(url), entry)
            return target
        os.makedirs(entry, exist_ok=True)
        retry(lambda: _download(fs, path, target), url, tries, backoff)
        with open(f"{done}.tmp", "w", encoding="utf-8") as out:
            json.dump({"url": redact(url), "version": version, "fetched": time.time()}, out)
        os.replace(f"{done}.tmp", done)
    log.info("fetched %s to %s", redact(url), target)
    return target


def _version(fs, path: str) -> str:
    """A string that changes when the object (or any file below a directory) changes."""
    if _is_dir(fs, path):
        infos = sorted(fs.find(path, detail=True).values(), key=lambda info: info["name"])
    else:
        infos = [fs.info(path)]
    fields = ("ETag", "etag", "e_tag", "md5", "Content-MD5", "size", "mtime", "LastModified",
              "last_modified", "Last-Modified", "updated", "created")
    stamp = [[info.get("name"), *(str(info.get(f)) for f in fields if info.get(f) is not None)]
             for info in infos]
    import hashlib
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _locked(lock_path: str) -> Iterator[None]:
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_batch(items: list[str], scratch: str | None = None
                ) -> tuple[list[str], Callable[[], None]]:
    """Local paths for a mini-batch's items, in order: URLs are downloaded (a few at a time) into
    a fresh directory under ``scratch`` (default: system temp); local paths pass through.
    Returns the paths and a ``cleanup()`` that removes the downloads."""
    if not any(is_url(item) for item in items):
        return [local_path(item) for item in items], lambda: None
    directory = scratch_dir(scratch)
    cleanup = functools.partial(shutil.rmtree, directory, ignore_errors=True)
    try:
        with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
            return list(pool.map(lambda item: fetch(item, directory), items)), cleanup
    except BaseException:
        cleanup()
        raise


def scratch_dir(base: str | None = None) -> str:
    """A fresh private directory for downloads (``base`` or the system temp directory)."""
    if base:
        os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix="prs-mpi-", dir=base)
