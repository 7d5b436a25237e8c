"""What the figures were measured on: machine, software versions and the container image's size."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.servers import ROOT

PACKAGES = (
    "bentoml",
    "onnxruntime",
    "numpy",
    "pillow",
    "starlette",
    "uvicorn",
    # uvicorn --loop auto (the seed's) picks uvloop when it is installed, which decides the seed's
    # multi-worker latency: see the warning in bench/run.py.
    "uvloop",
    "httptools",
    "fastapi",
    "python-multipart",
    "psutil",
    "matplotlib",
)
IMAGE_TAG = "dlops:latest"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _command_output(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def sources_digest() -> str:
    """sha256 over the service's own source files as they are on disk (committed or not): which
    code a run with local changes measured, when the commit alone cannot say."""
    digest = hashlib.sha256()
    files = sorted([*ROOT.glob("dlops/**/*.py"), ROOT / "service.py", ROOT / "import_model.py"])
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def machine_info() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        # hey prints no version of its own; the package manager that installed it knows.
        "hey": _command_output(["dpkg-query", "-W", "-f=${Version}", "hey"]),
        "git_commit": _command_output(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(_command_output(["git", "status", "--porcelain"])),
        "sources_sha256": sources_digest(),
        # Anything else running on these 2 cores shifts the figures; this shows if it did.
        "load_average_1m_at_start": os.getloadavg()[0],
    }


def machine_at_end(machine: dict[str, Any]) -> dict[str, Any]:
    """The machine as found at the start, with the load average at the end of the run."""
    return {**machine, "load_average_1m_at_end": os.getloadavg()[0]}


def container_image_size(tag: str = IMAGE_TAG) -> dict[str, Any]:
    """Size of the built image, from the first container engine that has it; a note otherwise."""
    notes = []
    for engine in ("docker", "podman"):
        path = shutil.which(engine)
        if path is None:
            continue
        result = subprocess.run(
            [path, "image", "inspect", "--format", "{{.Size}}", tag],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode == 0 and result.stdout.strip().isdigit():
            size = int(result.stdout.strip())
            return {"tag": tag, "engine": engine, "bytes": size, "mib": size / 2**20}
        reason = (result.stderr.strip().splitlines() or ["no such image"])[0]
        notes.append(f"{engine}: {reason}")
    note = "; ".join(notes) if notes else "no docker or podman on this machine"
    return {"tag": tag, "engine": None, "bytes": None, "mib": None, "note": note}
