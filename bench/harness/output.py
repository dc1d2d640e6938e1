"""Workload 4, output path: 7 ranks appending rows with MPI-IO vs one process writing them."""
from harness.common import WORK, Row, Section, error_of, interleave, mpi, peer, run_json, samples
from harness.items import write_items
from harness.prs import PrsWorkload, prs_missing, run_prs
from harness.settings import Settings

WRITERS = 7
BLOCK_KB = 1024
PRS_ROW = 8192
SEQ = "1 process, open().write"
STRATEGIES = {"rank0": "MPI-IO offsets from rank 0 + Write_at",
              "exscan": "MPI-IO Exscan + Write_at_all",
              "ordered": "MPI-IO Write_ordered"}


def contenders(cfg: Settings, total_mb: float) -> dict:
    t = cfg.timeout
    size = ("--total-mb", total_mb, "--block-kb", BLOCK_KB)
    out = {SEQ: lambda: run_json(peer("seq_write.py", "--path", WORK / "seq.txt", *size,
                                      "--writers", WRITERS), t)}
    for key, label in STRATEGIES.items():
        out[label] = lambda key=key: run_json(mpi(WRITERS + 1, peer(
            "mpiio_write.py", "--strategy", key, "--path", WORK / f"mpiio_{key}.txt", *size)), t)
    if not prs_missing():
        count = int(total_mb * 1e6 / PRS_ROW)
        listing = str(write_items("rows_items", [f"r{i:09d}-{PRS_ROW}" for i in range(count)]))
        work = PrsWorkload("output", "wide_rows.py", listing, mini_batch_size=128,
                           output_action="append_row")
        out["prs-mpi append_row (process, 8 ranks)"] = lambda: _prs_mb_per_s(
            run_prs(work, WRITERS + 1, "process", timeout=t))
    return out


def _prs_mb_per_s(record: dict) -> dict:
    record["mb_per_s"] = record["items"] * PRS_ROW / record["wall_seconds"] / 1e6
    return record


def run(cfg: Settings) -> Section:
    total_mb = cfg.size(100, 1024)
    results = interleave(contenders(cfg, total_mb), cfg.reps)
    section = Section(f"Output path: {total_mb:,} MB of 100-byte rows from {WRITERS} writer ranks "
                      f"in {BLOCK_KB} KiB writes, fsync included")
    for name, records in results.items():
        section.rows.append(Row("output", name, "MB/s", samples(records, "mb_per_s"),
                                error_of(records), () if name == SEQ else (SEQ,)))
    if prs_missing():
        section.rows.append(Row("output", "prs-mpi", "MB/s", [], prs_missing()))
    section.facts.append("MPI-IO: rank 0 of 8 writes nothing (it dispatches in prs-mpi); each file "
                         "is checked (size, every row whole) and deleted. prs-mpi: 8 KiB rows from "
                         "workloads/wide_rows.py, MB/s over the job's wall time (start-up included).")
    return section
