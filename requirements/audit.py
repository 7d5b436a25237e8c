"""Audit a pinned requirements file for known vulnerabilities: `make audit`.

    python requirements/audit.py requirements/serve.txt             # exit 1 on a finding
    python requirements/audit.py --report-only requirements/dev.txt

pip-audit asks PyPI's per-release JSON API (/pypi/NAME/VERSION/json) about each pin. Where that
endpoint is not served (a registry mirror answers it 404, and pip-audit then skips the package
with "not found on PyPI" and still prints "No known vulnerabilities found"), this falls back to
the project endpoint (/pypi/NAME/json), whose `vulnerabilities` are those of the latest release:
exact for a pin that is the latest release. A pin behind the latest release cannot be audited
that way and is listed as not audited, never counted as clean.

Accepted advisories are listed, each with a reason, in requirements/audit-ignore.txt.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

IGNORE_FILE = Path(__file__).resolve().parent / "audit-ignore.txt"
PROJECT_JSON_URL = "https://pypi.org/pypi/{name}/json"
TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]


def read_ignore_list(path: Path) -> set[str]:
    """Advisory IDs from `ID  # reason` lines; a line without a reason is an error."""
    accepted: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        advisory, _, reason = line.partition("#")
        advisory = advisory.strip()
        if not advisory:
            continue
        if not reason.strip():
            raise SystemExit(f"{path}:{number}: {advisory} has no reason; write `ID  # why`")
        accepted.add(advisory)
    return accepted


def run_pip_audit(requirements: Path) -> list[dict]:
    """pip-audit's JSON report of every pinned dependency (vulns, or a skip_reason)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip_audit",
            "--requirement",
            str(requirements),
            "--no-deps",  # the file is fully pinned by `make lock`; nothing to resolve
            "--disable-pip",
            "--vulnerability-service",
            "pypi",
            "--format",
            "json",
            "--progress-spinner",
            "off",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return json.loads(result.stdout)["dependencies"]
    except (json.JSONDecodeError, KeyError):
        raise SystemExit(f"pip-audit failed (exit {result.returncode}):\n{result.stderr}") from None


def latest_release_advisories(name: str) -> tuple[str, list[dict]]:
    """The latest version of `name` on PyPI and the advisories that affect it."""
    with urllib.request.urlopen(
        PROJECT_JSON_URL.format(name=name), timeout=TIMEOUT_SECONDS
    ) as response:
        project = json.load(response)
    return project["info"]["version"], project.get("vulnerabilities", [])


def findings_of(name: str, version: str, advisories: list[dict]) -> list[Finding]:
    """One finding per advisory, skipping withdrawn ones and aliases of one already listed."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for advisory in advisories:
        ids = {advisory["id"], *(advisory.get("aliases") or [])}
        if advisory.get("withdrawn") or ids & seen:
            continue
        seen |= ids
        findings.append(
            Finding(
                package=name,
                version=version,
                advisory=advisory["id"],
                aliases=tuple(advisory.get("aliases") or ()),
                # PyPI's JSON says "fixed_in", pip-audit's report "fix_versions".
                fixed_in=tuple(advisory.get("fixed_in") or advisory.get("fix_versions") or ()),
            )
        )
    return findings


def audit(requirements: Path) -> tuple[list[Finding], list[str], int]:
    """(findings, packages not audited with why, number of packages audited)."""
    findings: list[Finding] = []
    not_audited: list[str] = []
    audited = 0
    for dependency in run_pip_audit(requirements):
        name = dependency["name"]
        if "skip_reason" not in dependency:
            audited += 1
            findings += findings_of(name, dependency["version"], dependency["vulns"])
            continue
        pinned = dependency["skip_reason"].rsplit("(", 1)[-1].rstrip(")")
        try:
            latest, advisories = latest_release_advisories(name)
        except (urllib.error.URLError, TimeoutError, KeyError, json.JSONDecodeError) as error:
            not_audited.append(f"{name}=={pinned}: PyPI did not answer ({error})")
            continue
        if latest != pinned:
            not_audited.append(
                f"{name}=={pinned}: behind the latest release {latest}, and this registry "
                "does not serve the per-release JSON API pip-audit needs"
            )
            continue
        audited += 1
        findings += findings_of(name, pinned, advisories)
    return findings, not_audited, audited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", type=Path, help="a fully pinned requirements file")
    parser.add_argument(
        "--report-only", action="store_true", help="print findings but exit 0 (dev tools)"
    )
    arguments = parser.parse_args()

    accepted = read_ignore_list(IGNORE_FILE)
    findings, not_audited, audited = audit(arguments.requirements)
    open_findings = [
        finding for finding in findings if not accepted & {finding.advisory, *finding.aliases}
    ]

    print(f"{arguments.requirements}: {audited} pinned packages audited")
    for finding in findings:
        status = "ACCEPTED" if finding not in open_findings else "VULNERABLE"
        fixed = ", ".join(finding.fixed_in) or "no fix released"
        aliases = ", ".join(finding.aliases)
        print(
            f"  {status}: {finding.package}=={finding.version} {finding.advisory}"
            f" ({aliases}); fixed in: {fixed}"
        )
    for line in not_audited:
        print(f"  NOT AUDITED: {line}")
    print(
        f"{len(open_findings)} known vulnerabilities, {len(findings) - len(open_findings)} "
        f"accepted in {IGNORE_FILE.name}, {len(not_audited)} packages not audited"
    )
    if open_findings and not arguments.report_only:
        print(
            "Upgrade the package (pyproject.toml, then `make lock`), or accept the advisory "
            f"in {IGNORE_FILE} with a reason.",
            file=sys.stderr,
        )
        raise SystemExit(1)


if __name__ == "__main__":
    main()
