"""The figures of ``bench/imap.py``: rows of mailgw / Dovecot / ratio against issue 11's targets,
printed as one table and written as JSON for later runs to compare with."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Printed instead of a figure the server could not be asked for.
NOT_ANNOUNCED = "not announced"


@dataclass(frozen=True)
class Target:
    """One of issue 11's targets: its wording and a check of (mailgw, Dovecot) medians."""

    text: str
    met: Callable[[float, float | None], bool]


def ratio_at_most(limit: float) -> Target:
    """mailgw / Dovecot at most ``limit`` (a time or a size)."""
    return Target(f"<= {limit:g}x", lambda ours, theirs: ours <= limit * theirs)


def ratio_at_least(limit: float) -> Target:
    """mailgw / Dovecot at least ``limit`` (a rate)."""
    return Target(f">= {limit:g}x", lambda ours, theirs: ours >= limit * theirs)


def below(limit: float, unit: str) -> Target:
    """mailgw's own figure under ``limit`` ``unit``, whatever Dovecot's."""
    return Target(f"< {limit:g} {unit}", lambda ours, theirs: ours < limit)


@dataclass
class Row:
    """One measurement: the samples of each server (None: not asked, see ``missing``)."""

    label: str
    unit: str
    better: str  # "lower" or "higher"
    mailgw: list[float] | None = field(default_factory=list)
    dovecot: list[float] | None = field(default_factory=list)
    target: Target | None = None
    missing: str = NOT_ANNOUNCED

    def add(self, server: str, value: float) -> None:
        """One more sample of ``server`` ("mailgw" or "Dovecot")."""
        (self.mailgw if server == "mailgw" else self.dovecot).append(value)

    def skip(self, server: str) -> None:
        """``server`` could not be asked (the extension is not announced)."""
        if server == "mailgw":
            self.mailgw = None
        else:
            self.dovecot = None

    def medians(self) -> tuple[float | None, float | None]:
        """(mailgw, Dovecot) medians, None where not measured."""
        return (
            statistics.median(self.mailgw) if self.mailgw else None,
            statistics.median(self.dovecot) if self.dovecot else None,
        )

    def ratio(self) -> float | None:
        """mailgw's median over Dovecot's."""
        ours, theirs = self.medians()
        return ours / theirs if ours is not None and theirs else None

    def met(self) -> bool | None:
        """Whether the target is met (not measured: not met); None without a target."""
        if self.target is None:
            return None
        ours, theirs = self.medians()
        if ours is None:
            return False
        return self.target.met(ours, theirs)


def _number(value: float | None, missing: str) -> str:
    if value is None:
        return missing
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def print_table(rows: list[Row], header: list[str], notes: list[str]) -> None:
    """The table, with the header lines above and the notes below."""
    for line in header:
        print(line)
    print(
        f"{'measurement':44} {'unit':>5} {'mailgw':>13} {'Dovecot':>10} {'ratio':>6}"
        f"  {'target':>9} {'met':>3}  better"
    )
    for row in rows:
        ours, theirs = row.medians()
        ratio = row.ratio()
        met = {None: "", True: "yes", False: "NO"}[row.met()]
        print(
            f"{row.label:44} {row.unit:>5} {_number(ours, row.missing):>13}"
            f" {_number(theirs, row.missing):>10} {'' if ratio is None else f'{ratio:.2f}':>6}"
            f"  {row.target.text if row.target else '':>9} {met:>3}  {row.better}"
        )
    for note in notes:
        print(f"- {note}")


def write_json(path: Path, rows: list[Row], header: list[str], notes: list[str]) -> None:
    """The figures (medians, samples, ratio, target, met) and the run's context as JSON."""
    commit = subprocess.run(
        ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    figures = []
    for row in rows:
        ours, theirs = row.medians()
        figures.append(
            {
                "label": row.label,
                "unit": row.unit,
                "better": row.better,
                "mailgw": ours,
                "dovecot": theirs,
                "ratio": row.ratio(),
                "target": row.target.text if row.target else None,
                "met": row.met(),
                "missing": None if ours is not None and theirs is not None else row.missing,
                "samples": {"mailgw": row.mailgw, "dovecot": row.dovecot},
            }
        )
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit,
        "header": header,
        "notes": notes,
        "rows": figures,
    }
    path.write_text(json.dumps(document, indent=1) + "\n")
