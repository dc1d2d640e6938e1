"""Run the prs-mpi benchmarks against their peers and write a results table.

    python bench/run.py            # full run (~25 min on 2 cores) -> bench/RESULTS.md
    python bench/run.py --quick    # small sizes, a few minutes -> bench/RESULTS-quick.md
    python bench/run.py --quick --only dispatch balance

Contenders are interleaved within each repetition and figures are medians, because the
machine is shared and noisy. Every subprocess has a timeout; ``bench/work`` is removed at the end.
"""
import argparse
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import balance, cpu, dispatch, listing, machine, output, report, scale  # noqa: E402
from harness.common import BENCH, WORK  # noqa: E402
from harness.settings import Settings  # noqa: E402

log = logging.getLogger("bench")

WORKLOADS = {"dispatch": dispatch.run, "balance": balance.run, "cpu": cpu.run,
             "output": output.run, "listing": listing.run, "scale": scale.run}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer repetitions")
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), metavar="NAME",
                        help=f"run only these workloads: {', '.join(WORKLOADS)}")
    parser.add_argument("--reps", type=int, help="repetitions (default: 2 quick, 3 full)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per subprocess")
    parser.add_argument("--out", type=Path, help="results file (default: RESULTS.md for a full "
                                                  "run of everything, else RESULTS-quick.md)")
    parser.add_argument("--keep", action="store_true", help="keep bench/work afterwards")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    cfg = Settings(quick=args.quick, reps=args.reps or (2 if args.quick else 3),
                   timeout=args.timeout, keep=args.keep)
    names = args.only or list(WORKLOADS)
    out = args.out or BENCH / ("RESULTS.md" if not args.quick and not args.only
                               else "RESULTS-quick.md")
    info = machine.describe()
    t0 = time.perf_counter()
    sections = []
    try:
        for name in names:
            log.info("workload %s (%s, %d reps)", name, "quick" if cfg.quick else "full", cfg.reps)
            load = os.getloadavg()[0]
            section = WORKLOADS[name](cfg)
            section.facts.append(f"Load average (1 min) {load:.2f} at the start of this workload, "
                                 f"{os.getloadavg()[0]:.2f} at its end (2 cores; other jobs add noise).")
            sections.append(section)
            print(report.section_markdown(section), flush=True)
    finally:
        if not cfg.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    command = "python bench/run.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    report.write(out, report.document(info, command.strip(), sections, time.perf_counter() - t0))
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
