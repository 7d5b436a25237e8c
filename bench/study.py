"""What every study shares outside its measurements: its entry point, its log, its --quick
defaults, the header of its report, number formatting and its results files in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def run_study(main: Callable[[], object], name: str = "bench") -> None:
    """Run a study's ``main`` as its command: a plain `kill` and Ctrl-C both run the finally
    blocks that stop its servers, and an interruption ends in one line, not a traceback."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit(f"{name}: interrupted, servers stopped, no results written") from None


def command_line(module: str, argv: list[str] | None) -> str:
    """The study's command as typed, for its report: ``argv`` when given, else this process's."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def quick_or_full(args: argparse.Namespace, defaults: Mapping[str, tuple[int, int]]) -> dict:
    """Each count of ``defaults`` ((full, --quick) by name): the option's value when given."""
    chosen = {}
    for name, full_quick in defaults.items():
        given = getattr(args, name, None)
        chosen[name] = given if given is not None else full_quick[args.quick]
    return chosen


def listed_names(allowed: Iterable[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated list of some of ``allowed``, in the order given."""
    allowed = tuple(allowed)

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a comma-separated list of {', '.join(allowed)}"
            )
        return names

    return parse


def listed_counts(expected: str) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: comma-separated whole numbers of at least 1; ``expected`` says what,
    with an example, in the error."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            counts = tuple(int(part) for part in text.split(","))
        except ValueError:
            counts = ()
        if not counts or min(counts) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return counts

    return parse


def fmt(value: float | None, digits: int = 1) -> str:
    """A figure with thousands separators; nothing for a figure that was not measured."""
    return "" if value is None else f"{value:,.{digits}f}"


def machine_line(machine: dict[str, Any]) -> str:
    packages = ", ".join(
        f"{name} {version}" for name, version in machine["packages"].items() if version
    )
    return (
        f"Machine: {machine['cpu_model']}, {machine['cpus_usable']} usable cores, "
        f"{machine['memory_gib']} GiB, Python {machine['python']}; {packages}; "
        f"hey {machine['hey']}"
    )


def run_header(data: dict[str, Any]) -> list[str]:
    """The command, the machine, the packages and the load: the first lines of a report."""
    machine = data["machine"]
    return [
        f"`{data['command']}` on {machine['date']}, {data['wall_seconds']:.0f} s wall time.",
        f"{machine_line(machine)}; commit {machine['git_commit'] or '(none)'}"
        f"{' with local changes' if machine['git_dirty'] else ''}"
        f" (service sources sha256 {machine.get('sources_sha256', '?')[:12]}). 1-minute load "
        "average "
        f"{machine['load_average_1m_at_start']:.2f} at the start, "
        f"{machine['load_average_1m_at_end']:.2f} at the end (this run's own processes count).",
    ]


def write_json(path: Path, data: dict[str, Any], indent: int = 2) -> None:
    # default=str: settings may hold paths.
    path.write_text(json.dumps(data, indent=indent, default=str) + "\n", encoding="utf-8")


def write_results(
    directory: Path, stem: str, data: dict[str, Any], markdown: list[str], indent: int = 2
) -> tuple[Path, Path]:
    """STEM.json (the figures) and STEM.md (the report's lines) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    write_json(json_path, data, indent)
    text = "\n".join(markdown)
    md_path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return json_path, md_path
