"""Figures and their ceilings, as a markdown table and as JSON.

``ratio`` is always figure / ceiling. A rate's ceiling is an upper bound (ratio <= 1 expected),
a time's ceiling a lower bound (ratio >= 1 expected).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sqlite3
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The barest loop that does a figure's work, measured in the same run."""

    name: str
    value: float
    unit: str
    how: str  # one sentence: what exactly the loop does


@dataclass(frozen=True, slots=True)
class Figure:
    key: str  # "1a", "2b", ...: stable, so that runs can be compared
    name: str
    value: float
    unit: str
    ceiling: Ceiling
    command: str  # what reruns just this figure's section
    higher_is_better: bool = True
    target: float | None = None
    also: tuple[Ceiling, ...] = ()  # further ceilings worth a ratio
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.value / self.ceiling.value

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target


@dataclass(frozen=True, slots=True)
class Environment:
    command: str
    date: str
    python: str
    sqlite: str
    msgpack: str
    nproc: int
    cpus_usable: int
    machine: str
    scratch: str  # the scratch folder's file system: fsync figures depend on it
    quick: bool
    # RAM, and what of it was free at the start: whether the verify stores (574 MiB at 1M records)
    # stay in the page cache between their build and their runs depends on it.
    memory: str = "unknown"

    @classmethod
    def here(cls, command: str, scratch_root: Path, quick: bool) -> Environment:
        return cls(
            command=command,
            date=datetime.now(UTC).isoformat(timespec="seconds"),
            python=platform.python_version(),
            sqlite=sqlite3.sqlite_version,
            msgpack=".".join(str(part) for part in msgpack.version),
            nproc=os.cpu_count() or 0,
            cpus_usable=len(os.sched_getaffinity(0)),
            machine=f"{platform.machine()} {platform.system()} {platform.release()}",
            scratch=f"{scratch_root} on {_file_system(scratch_root)}",
            quick=quick,
            memory=_memory(),
        )


def _memory() -> str:
    """RAM and what of it is available now (/proc/meminfo), or "unknown"."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        total, available = (int(fields[name].split()[0]) / 2**20 for name in ("MemTotal", "MemAvailable"))
    except (OSError, ValueError, KeyError, IndexError):
        return "unknown"
    return f"{total:.1f} GiB ({available:.1f} available)"


def _file_system(path: Path) -> str:
    """The type of the file system holding ``path`` (from /proc/mounts), or "unknown"."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, f"{parts[2]} ({parts[0]})"
    return kind


def _number(value: float) -> str:
    if value >= 1_000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _met(figure: Figure) -> str:
    met = figure.met
    return "—" if met is None else ("yes" if met else "**no**")


def _target(figure: Figure) -> str:
    if figure.target is None:
        return "—"
    return f"{'≥' if figure.higher_is_better else '≤'} {_number(figure.target)}"


def render_markdown(env: Environment, figures: list[Figure]) -> str:
    lines = [
        f"# vledger benchmarks{' (--quick: sizes too small to mean anything)' if env.quick else ''}",
        "",
        f"command: `{env.command}` · date: {env.date} · python {env.python} · sqlite {env.sqlite} · "
        f"msgpack {env.msgpack} · nproc {env.nproc} ({env.cpus_usable} usable) · {env.machine} · "
        f"scratch: {env.scratch} · memory {env.memory}",
        "",
        "ratio = figure / ceiling, both measured in this run, their runs interleaved so that both see the "
        "same load (rates: the ceiling is an upper bound; times: a lower bound). Each rate is the best of "
        "its runs; proof-of-work times are the mean or median of the searches.",
        "",
        "| figure | value | unit | ceiling | ratio | target | met |",
        "| --- | ---: | --- | --- | ---: | --- | --- |",
    ]
    for f in figures:
        lines.append(
            f"| {f.key} {f.name} | {_number(f.value)} | {f.unit} | {_number(f.ceiling.value)} {f.ceiling.unit} "
            f"({f.ceiling.name}) | {f.ratio:.2f} | {_target(f)} | {_met(f)} |"
        )
        for c in f.also:
            lines.append(
                f"| ↳ {f.key} against {c.name} | | | {_number(c.value)} {c.unit} | {f.value / c.value:.2f} | | |"
            )
    lines += ["", "## Ceilings", "", "| ceiling | value | unit | how |", "| --- | ---: | --- | --- |"]
    seen: set[str] = set()
    for f in figures:
        for c in (f.ceiling, *f.also):
            if c.name not in seen:
                seen.add(c.name)
                lines.append(f"| {c.name} | {_number(c.value)} | {c.unit} | {c.how} |")
    lines += ["", "## Details", ""]
    for f in figures:
        details = ", ".join(f"{k} {v}" for k, v in f.details.items())
        lines.append(f"- {f.key}: `{f.command}`{' · ' + details if details else ''}")
    return "\n".join(lines) + "\n"


def to_json(env: Environment, figures: list[Figure]) -> dict[str, Any]:
    return {
        "environment": asdict(env),
        "figures": [
            {
                "key": f.key,
                "name": f.name,
                "value": f.value,
                "unit": f.unit,
                "ceiling": asdict(f.ceiling),
                "ratio": f.ratio,
                "also": [{**asdict(c), "ratio": f.value / c.value} for c in f.also],
                "target": f.target,
                "higher_is_better": f.higher_is_better,
                "met": f.met,
                "command": f.command,
                "details": f.details,
            }
            for f in figures
        ],
    }


def check_numeric(figures: list[Figure]) -> None:
    """Refuse to write a report with a figure that is not a finite positive number."""
    for f in figures:
        for value in (f.value, f.ceiling.value, *(c.value for c in f.also)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"figure {f.key} ({f.name}): {value!r} is not a positive number")


def write_results(out: Path, env: Environment, figures: list[Figure]) -> str:
    """Write latest.md and latest.json into ``out``; return the markdown."""
    check_numeric(figures)
    text = render_markdown(env, figures)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps(to_json(env, figures), indent=2) + "\n")
    return text


def progress(message: str) -> None:
    """A line on stderr while the benchmarks run, so that stdout holds only the report."""
    print(f"bench: {message}", file=sys.stderr, flush=True)
