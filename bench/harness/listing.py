"""Workload 5, big listings: 1M paths in a listing file, and a directory of many empty files."""
import os
import time
from pathlib import Path

from harness.common import WORK, Row, Section, error_of, interleave, peer, run_json, samples
from harness.prs import PrsWorkload, prs_missing, run_prs
from harness.settings import Settings

RANKS = 8


def make_listing(count: int, directory: Path, nfiles: int) -> Path:
    """A listing file of ``count`` paths cycling through the ``nfiles`` files of ``directory``
    (prs-mpi checks that listed inputs exist; creating 1M files would take a minute)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "big_listing.txt"
    with path.open("w", encoding="utf-8") as fh:
        for start in range(0, count, 100_000):
            stop = min(count, start + 100_000)
            fh.write("".join(f"{directory}/f{i % nfiles:07d}.dat\n" for i in range(start, stop)))
    return path


def make_dir(count: int) -> tuple[Path, float]:
    """A directory of ``count`` empty files, and the seconds it took to create them."""
    directory = WORK / "big_dir"
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(count):
        os.close(os.open(directory / f"f{i:07d}.dat", os.O_CREAT | os.O_WRONLY, 0o644))
    return directory, time.perf_counter() - t0


def contenders(cfg: Settings, listing: Path, directory: Path) -> dict:
    t = cfg.timeout
    out = {"hold the listing in a list": lambda: run_json(peer("listing_probe.py", "--listing",
                                                            listing), t),
           "os.scandir over the directory": lambda: run_json(peer("listing_probe.py", "--dir",
                                                                  directory), t)}
    if not prs_missing():
        by_list = PrsWorkload("listing", "noop.py", str(listing), mini_batch_size=1000)
        by_glob = PrsWorkload("dir", "noop.py", f"{directory}/*", mini_batch_size=1000)
        out["prs-mpi, listing file"] = lambda: run_prs(by_list, RANKS, "process", timeout=t, memory=True, pss=True)
        out["prs-mpi, directory glob"] = lambda: run_prs(by_glob, RANKS, "process", timeout=t, memory=True, pss=True)
    return out


def prs_rows(name: str, records: list[dict]) -> list[Row]:
    ok = [r for r in records if "error" not in r]
    note = error_of(records)
    rank0 = [r["rss"]["supervisor"].get(0) for r in ok if r["rss"].get("supervisor")]
    others = [max(v for k, v in r["rss"]["supervisor"].items() if k != 0)
              for r in ok if len(r["rss"].get("supervisor", {})) > 1]
    others_pss = [max(v for k, v in r["rss"]["supervisor_pss"].items() if k != 0)
                  for r in ok if len(r["rss"].get("supervisor_pss", {})) > 1]
    return [Row("listing", f"{name}: job wall time", "s", samples(ok, "wall_seconds"),
                note or "1000 items per mini-batch, no-op, 8 ranks"),
            Row("listing", f"{name}: time to first mini-batch", "s",
                samples(ok, "first_batch_s"), note or "target <= 1 s (job start to first start)"),
            Row("listing", f"{name}: rank-0 peak RSS", "MB", [v for v in rank0 if v],
                note or "target <= 300 MB"),
            Row("listing", f"{name}: worker supervisor peak RSS (max over ranks)", "MB", others,
                note or "target <= 40 MB beyond the child"),
            Row("listing", f"{name}: worker supervisor peak PSS (max over ranks)", "MB", others_pss,
                note or "shared libraries and MPI shared memory split among the ranks")]


def run(cfg: Settings) -> Section:
    nfiles, npaths = cfg.size(10_000, 100_000), cfg.size(200_000, 1_000_000)
    directory, create_s = make_dir(nfiles)
    listing = make_listing(npaths, directory, nfiles)
    results = interleave(contenders(cfg, listing, directory), cfg.reps)
    section = Section(f"Big listings: {npaths:,} paths in a listing file; a directory of "
                      f"{nfiles:,} empty files")
    held, scan = results["hold the listing in a list"], results["os.scandir over the directory"]
    section.rows += [
        Row("listing", f"baseline: read the {npaths:,}-line listing into a list", "s",
            samples(held, "read_s"), error_of(held)),
        Row("listing", f"baseline: RSS held by {npaths:,} path strings", "MB",
            samples(held, "rss_held_mb"), error_of(held)),
        Row("listing", "baseline: os.scandir, first entry", "ms",
            [v * 1000 for v in samples(scan, "first_entry_s")], error_of(scan)),
        Row("listing", f"baseline: os.scandir over {nfiles:,} files", "s", samples(scan, "scan_s"),
            error_of(scan)),
    ]
    for name in ("prs-mpi, listing file", "prs-mpi, directory glob"):
        if name in results:
            section.rows += prs_rows(name, results[name])
    if prs_missing():
        section.rows.append(Row("listing", "prs-mpi", "s", [], prs_missing()))
    section.facts.append(f"Creating the {nfiles:,} empty files took {create_s:.1f} s "
                         f"({nfiles / create_s:,.0f} files/s); 1M would take ~{1e6 / nfiles * create_s:.0f} s, "
                         "hence a listing file for the million-item case, whose 1M lines name the directory's "
                         "files over and over (prs-mpi keeps duplicates).")
    return section
