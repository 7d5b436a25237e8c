"""The load generator: `hey` (a Debian package, a Go binary) posting one multipart upload.

A load generator written in Python would take one of this machine's two cores away from the server
under test and measure itself; hey is lighter and records every request (its CSV output), so the
percentiles below are computed here from all latencies rather than read off its summary.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.placement import pinned_to
from bench.servers import ROOT

BOUNDARY = "dlopsbench8c1f6b2a5e9d"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
REQUEST_TIMEOUT_SECONDS = 20  # hey's per-request timeout; a slower answer counts as an error
# Bounds the whole hey run even if a server stalls: a floor of this many requests per second.
SLOWEST_EXPECTED_RPS = 20
DIGITS = ROOT / "tests" / "fixtures" / "digits"
DIGIT = DIGITS / "test0300_digit3.png"  # a 3, the committed model's positive class


def is_mnist_sized(path: Path) -> bool:
    # The seed app feeds the decoded pixels straight to the model, so only a 28x28 grayscale
    # image gets a 200 from it; anything else would benchmark its error path.
    with Image.open(path) as image:
        return image.mode == "L" and image.size == (28, 28)


def default_image() -> Path:
    """A real MNIST digit from the test fixtures, a 3 when one can be told from the name."""
    candidates = [path for path in sorted(DIGITS.glob("*.png")) if is_mnist_sized(path)]
    if not candidates:
        raise SystemExit(f"no 28x28 grayscale PNG in {DIGITS}/: pass --image PATH")
    threes = [p for p in candidates if re.search(r"(?<![0-9])3(?![0-9])|three", p.stem, re.I)]
    return (threes or candidates)[0]


def multipart_body(
    png: bytes,
    copies: int = 1,
    field: str = "file",
    filename: str = "digit.png",
    part_type: str = "image/png",
) -> bytes:
    """The body `curl -F file=@digit.png` sends (with ``copies`` > 1, `-F` repeated that often),
    built once so every request is identical."""
    part = (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {part_type}\r\n\r\n"
        ).encode()
        + png
        + b"\r\n"
    )
    return part * copies + f"--{BOUNDARY}--\r\n".encode()


def ensure_hey() -> str:
    """The path of hey, installing Debian's package when it is missing."""
    found = shutil.which("hey")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise SystemExit("hey is not installed and there is no apt-get: install hey and rerun")
    print("bench: hey (HTTP load generator) is missing; installing it: apt-get install -y hey")
    if subprocess.run([apt, "install", "-y", "hey"], check=False).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run([apt, "update"], check=False)
        subprocess.run([apt, "install", "-y", "hey"], check=False)
    found = shutil.which("hey")
    if found is None:
        raise SystemExit("could not install hey with apt-get (are you root?): install it and rerun")
    return found


@dataclass(frozen=True)
class LoadResult:
    """One hey run against one subject at one concurrency."""

    concurrency: int
    sent: int  # hey sends requests // concurrency per connection, so this may be a little less
    ok: int
    non_200: int  # other statuses plus requests that failed or timed out without any answer
    statuses: dict[str, int]
    duration_s: float
    rps: float  # 200 answers per second: an error answered quickly must not look like speed
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def parse_hey_csv(text: str, concurrency: int, requests: int | None) -> LoadResult:
    """Summarise hey's per-request CSV (times in seconds, 0.1 ms resolution).

    hey writes a row only for requests that got an answer; the missing ones are counted as
    non-200 from the number it was asked to send (``requests``; None for a timed run, whose
    requests still in flight at the end are not counted).
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise RuntimeError(f"no request got an answer at concurrency {concurrency}")
    sent = len(rows) if requests is None else concurrency * (requests // concurrency)
    latencies = np.array([float(row["response-time"]) for row in rows]) * 1000.0
    statuses = Counter(row["status-code"] for row in rows)
    if len(rows) < sent:
        statuses["no answer"] = sent - len(rows)
    ok = statuses.get("200", 0)
    # Each offset is when a request started, counted from hey's start.
    duration = max(float(row["offset"]) + float(row["response-time"]) for row in rows)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return LoadResult(
        concurrency=concurrency,
        sent=sent,
        ok=ok,
        non_200=sent - ok,
        statuses=dict(sorted(statuses.items())),
        duration_s=duration,
        rps=ok / duration if duration > 0 else 0.0,
        mean_ms=float(np.mean(latencies)),
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        max_ms=float(np.max(latencies)),
    )


def hey_argv(
    hey: str,
    url: str,
    body_path: Path,
    concurrency: int,
    requests: int | None = None,
    duration: str | None = None,
    content_type: str = CONTENT_TYPE,
    csv_output: bool = False,
    headers: Sequence[str] = (),
) -> list[str]:
    """hey POSTing the prepared body over ``concurrency`` keep-alive connections, ``requests``
    times or for ``duration`` (such as "10s"; hey reports what it saw when interrupted), with
    the extra ``headers`` ("Name: value")."""
    amount = ("-n", str(requests)) if duration is None else ("-z", duration)
    return [
        hey,
        *amount,
        *("-c", str(concurrency), "-t", str(REQUEST_TIMEOUT_SECONDS)),
        *("-m", "POST", "-D", str(body_path), "-T", content_type),
        *(option for header in headers for option in ("-H", header)),
        *(("-o", "csv") if csv_output else ()),
        url,
    ]


def run_hey(
    hey: str,
    url: str,
    body_path: Path,
    requests: int | None,
    concurrency: int,
    content_type: str = CONTENT_TYPE,
    cpus: tuple[int, ...] | None = None,
    duration_s: float | None = None,
    headers: Sequence[str] = (),
) -> LoadResult:
    """POST the prepared body ``requests`` times (or for ``duration_s`` seconds, when
    ``requests`` is None) over ``concurrency`` keep-alive connections; ``cpus``: the CPUs hey may
    run on (None: any)."""
    duration = None if requests is not None else f"{duration_s:g}s"
    timeout = 60 + (duration_s or 0) + (requests or 0) / SLOWEST_EXPECTED_RPS
    argv = hey_argv(
        hey, url, body_path, concurrency, requests, duration, content_type, True, headers
    )
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        preexec_fn=pinned_to(cpus),
    )
    if result.returncode != 0:
        raise RuntimeError(f"hey failed ({result.returncode}): {result.stderr.strip()}")
    return parse_hey_csv(result.stdout, concurrency, requests)


def post_once(
    url: str, body: bytes, content_type: str = CONTENT_TYPE, headers: Sequence[str] = ()
) -> Any:
    """One request outside the load generator, to check the answer before measuring its speed;
    ``headers`` as hey takes them ("Name: value")."""
    sent = {"Content-Type": content_type}
    sent.update(header.split(": ", 1) for header in headers)
    request = urllib.request.Request(url, data=body, method="POST", headers=sent)
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
        return json.loads(response.read())
