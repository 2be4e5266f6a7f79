"""Markdown for every benchmark report: the one table writer, and the cell formats the
reports share. Each report decides what to say; how a table is spelled is decided here."""

from collections.abc import Iterable, Mapping, Sequence


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    left: int = 1,
    text_from: int | None = None,
) -> str:
    """A GitHub table ending in a newline. Columns before `left` and from `text_from` on are
    text (left-aligned); those between are figures (right-aligned, so digits line up)."""
    end = len(header) if text_from is None else text_from
    align = ["---:" if left <= i < end else "---" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(map(_cell, line)) + " |" for line in lines) + "\n"


def _cell(text: str) -> str:
    # A bare pipe would end the cell early, even inside a code span.
    return text.replace("|", "\\|")


def facts(values: Mapping[str, object]) -> str:
    """A two-column table of names and values, e.g. the machine and versions."""
    return table(["", ""], [[k, str(v)] for k, v in values.items()], left=2)


def counts(values: Mapping[str, int]) -> str:
    """A one-row table: each name a column, its count below, e.g. the data set."""
    return table(list(values), [[f"{v:,}" for v in values.values()]], left=0)


def figure(value: float | None, spec: str = ",.0f", none: str = "n/a") -> str:
    """`value` formatted by `spec`; `none` where it was not measured."""
    return none if value is None else format(value, spec)


def tally(counted: Iterable[tuple[str, int]]) -> str:
    """`1,234 x shed, 5 x deadline`: counted kinds in the order given; empty when none."""
    return ", ".join(f"{n:,} x {kind}" for kind, n in counted)
