"""Render sections as markdown: the console table and ``bench/RESULTS.md``."""
from pathlib import Path

from harness.common import Row, Section

UNIT_FORMAT = {"tasks/s": "{:,.0f}", "items/s": "{:,.1f}", "MB/s": "{:,.0f}", "s": "{:.3f}",
               "MB": "{:,.1f}", "x bound": "{:.3f}", "ms": "{:.1f}"}


def fmt(value: float, unit: str) -> str:
    return UNIT_FORMAT.get(unit, "{:.3g}").format(value)


def ratios(row: Row, rows: list[Row]) -> str:
    """``0.52× mpi_loop`` for each reference the row names that has figures."""
    by_name = {r.contender: r for r in rows}
    out = []
    for ref in row.refs:
        other = by_name.get(ref)
        if row.median is not None and other is not None and other.median:
            out.append(f"{row.median / other.median:.2f}× {ref}")
    return "; ".join(out)


def table(section: Section) -> str:
    lines = ["| contender | median | unit | min – max | n | ratio | note |",
             "|---|---:|---|---|---:|---|---|"]
    for row in section.rows:
        if row.median is None:
            lines.append(f"| {row.contender} | – | {row.unit} | | 0 | | {row.note} |")
            continue
        spread = f"{fmt(min(row.samples), row.unit)} – {fmt(max(row.samples), row.unit)}"
        lines.append(f"| {row.contender} | {fmt(row.median, row.unit)} | {row.unit} | {spread} | "
                     f"{len(row.samples)} | {ratios(row, section.rows)} | {row.note} |")
    return "\n".join(lines)


def section_markdown(section: Section) -> str:
    parts = [f"## {section.title}", "", table(section)]
    if section.facts:
        parts += [""] + [f"- {fact}" for fact in section.facts]
    for extra in section.tables:
        parts += ["", extra]
    return "\n".join(parts) + "\n"


def document(machine: dict, command: str, sections: list[Section], wall: float) -> str:
    head = ["# prs-mpi benchmark results", "",
            f"Produced by `{command}` in {wall / 60:.1f} min. Every figure is the median of the "
            "repetitions; contenders were interleaved within each repetition. Ratios are "
            "ratios of medians. Generated file: do not edit by hand.", "",
            "| machine | |", "|---|---|"]
    head += [f"| {k} | {v} |" for k, v in machine.items()]
    return "\n".join(head) + "\n\n" + "\n".join(section_markdown(s) for s in sections)


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
