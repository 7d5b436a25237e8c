"""Hostile input against a real server: what each attack gets back, and what it costs the server.

    python -m bench.hostile [--baseline REF]

Serves the committed digit model with ``API_KEY`` set and a 3 s request timeout (the issue's
set-up), then sends each hostile case of bench/hostile_inputs.py in turn while two monitors run:
one asks ``/livez`` every 0.1 s and keeps the longest wait for an answer, the other samples the
RSS of every process of the serving tree every 0.05 s and keeps the peak. ``--baseline REF``
runs the same cases against an older commit's tree, before this one, in the same run.
Writes bench/results/hostile.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import hostile_inputs as hostile
from bench.load import DIGIT
from bench.machine import machine_info
from bench.servers import (
    ROOT,
    PeakRss,
    Server,
    baseline_tree,
    dlops_server,
    import_model,
    running,
)
from bench.study import RESULTS, run_study, write_results

API_KEY = "hostile-bench-key"
SERVER_ENV = {"API_KEY": API_KEY, "DLOPS_REQUEST_TIMEOUT_SECONDS": "3"}
THREE = DIGIT.read_bytes()
AUTH = {"Authorization": f"Bearer {API_KEY}"}
IDLE_CONNECTIONS = 1000
SLOWLORIS_CONNECTIONS = 200
# How long the connection cases hold their connections before looking which are still open:
# past the head timeout (10 s) with a margin.
HOLD_SECONDS = 13.0


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an answer
    body: bytes
    seconds: float
    headers: dict[str, str] = field(default_factory=dict)

    def error(self) -> str:
        try:
            return str(json.loads(self.body)["error"])
        except (ValueError, KeyError, TypeError):
            return self.body[:120].decode("utf-8", "replace")


def request_bytes(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_answer(connection: socket.socket, started: float) -> Answer:
    """One HTTP response from ``connection`` (read until Content-Length or close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(connection)
        if not chunk:
            return Answer(None, data, time.perf_counter() - started)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = _recv(connection)
        if not chunk:
            break
        body += chunk
    return Answer(status, body[:length], time.perf_counter() - started, headers)


def _recv(connection: socket.socket) -> bytes:
    try:
        return connection.recv(65536)
    except OSError:  # reset by the server: no answer
        return b""


def exchange(
    url: str, payload: bytes, stall_after: int | None = None, timeout: float = 60
) -> Answer:
    """Send ``payload`` (or only its first ``stall_after`` bytes, then nothing) and read the
    answer; a server that closes while the client still sends has answered (or not) already."""
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        with contextlib.suppress(OSError):
            connection.sendall(payload if stall_after is None else payload[:stall_after])
        return read_answer(connection, started)


def post(url: str, path: str, body: bytes, content_type: str, auth: bool = True) -> Answer:
    headers = {"Content-Type": content_type, **(AUTH if auth else {})}
    return exchange(url, request_bytes("POST", path, headers, body))


class Watch:
    """While a case runs: ``/livez`` asked every 0.1 s (each answer's status, None for no answer
    within ``livez_timeout``, and the longest wait) and the serving tree's peak RSS
    (bench/servers.py's PeakRss)."""

    def __init__(self, url: str, root_pid: int, livez_timeout: float = 30) -> None:
        self.url = url
        self.livez_timeout = livez_timeout
        self.livez: list[int | None] = []
        self.longest_livez = 0.0
        self._peak = PeakRss(root_pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ask_livez, daemon=True)

    def __enter__(self) -> Watch:
        self._peak.__enter__()
        self._thread.start()
        time.sleep(0.3)  # a few answers before the case begins
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak.__exit__(*exc)

    @property
    def peak_tree_mib(self) -> float:
        return self._peak.peak_tree_mib

    def _ask_livez(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(
                    self.url + "/livez", timeout=self.livez_timeout
                ) as response:
                    self.livez.append(response.status)
            except urllib.error.HTTPError as error:
                self.livez.append(error.code)
            except OSError:
                self.livez.append(None)
            self.longest_livez = max(self.longest_livez, time.perf_counter() - started)
            self._stop.wait(0.1)

    @property
    def livez_failures(self) -> int:
        return sum(status != 200 for status in self.livez)


# -- the cases -----------------------------------------------------------------------------------


V2_INFER = "/v2/models/binary_classifier_3/infer"


def case_v2_slow_body(url: str) -> str:
    body = json.dumps({"inputs": []}).encode() * 1000
    payload = request_bytes("POST", V2_INFER, {"Content-Type": "application/json", **AUTH}, body)
    answer = exchange(url, payload, stall_after=len(payload) - len(body) + 100)
    return describe(answer)


def case_v2_decodes_past_the_deadline(url: str) -> str:
    body = hostile.v2_files_request([hostile.bitonal_png(6000, 6666)] * 3)
    answers = [post(url, V2_INFER, body, "application/json") for _ in range(4)]
    return "; ".join(describe(answer) for answer in answers)


def case_strip_png(url: str) -> str:
    body, content_type = hostile.multipart([hostile.strip_png()])
    return describe(post(url, "/predict", body, content_type))


def case_batch_of_bitonal_pngs(url: str) -> str:
    body, content_type = hostile.multipart([hostile.bitonal_png(6000, 6666)] * 48)
    answer = post(url, "/predict_batch", body, content_type)
    if answer.status == 200:
        statuses = [item.get("status", 200) for item in json.loads(answer.body)]
        counts = {status: statuses.count(status) for status in sorted(set(statuses))}
        return f"200 in {answer.seconds:.1f} s, items {counts}"
    return describe(answer)


def case_many_scans_jpeg(url: str) -> str:
    body, content_type = hostile.multipart([hostile.many_scans_jpeg()])
    return describe(post(url, "/predict", body, content_type))


def case_text_chunks_png(url: str) -> str:
    body, content_type = hostile.multipart([hostile.text_bomb_png()])
    return describe(post(url, "/predict", body, content_type))


def case_long_part_head(url: str) -> str:
    body, content_type = hostile.multipart([THREE], part_head_padding=9 * 1024 * 1024)
    return describe(post(url, "/predict", body, content_type))


def case_huge_header(url: str) -> str:
    headers = {"X-Padding": "a" * (32 * 1024 * 1024)}
    return describe(exchange(url, request_bytes("GET", "/livez", headers)))


def case_many_headers(url: str) -> str:
    headers = {f"X-Header-{index}": "x" for index in range(500)}
    return describe(exchange(url, request_bytes("GET", "/livez", headers)))


def _open_connections(url: str, count: int) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    connections = []
    for _ in range(count):
        connection = socket.create_connection((host, int(port)), timeout=5)
        connection.setblocking(False)
        connections.append(connection)
    return connections


def _still_open(connections: list[socket.socket]) -> int:
    open_count = 0
    for connection in connections:
        try:
            open_count += connection.recv(65536, socket.MSG_PEEK) != b"" and 0
        except BlockingIOError:
            open_count += 1  # nothing to read and not closed
        except OSError:
            pass
    return open_count


def case_idle_connections(url: str) -> str:
    connections = _open_connections(url, IDLE_CONNECTIONS)
    time.sleep(HOLD_SECONDS)
    remaining = _still_open(connections)
    for connection in connections:
        connection.close()
    return f"{remaining} of {IDLE_CONNECTIONS} still open after {HOLD_SECONDS:g} s"


def case_slowloris(url: str) -> str:
    connections = _open_connections(url, SLOWLORIS_CONNECTIONS)
    head = request_bytes("POST", "/predict", {"Content-Type": "image/png", **AUTH}, THREE)
    started = time.perf_counter()
    sent = 0
    while time.perf_counter() - started < HOLD_SECONDS and sent < len(head):
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.send(head[sent : sent + 1])
        sent += 1
        time.sleep(1.0)
    remaining = _still_open(connections)
    statuses: dict[str, int] = {}
    for connection in connections:
        try:
            data = connection.recv(65536)
            status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
        except BlockingIOError:
            status = "open"
        except OSError:
            status = "reset"
        statuses[status] = statuses.get(status, 0) + 1
        connection.close()
    return f"{remaining} of {SLOWLORIS_CONNECTIONS} still open after {HOLD_SECONDS:g} s: {statuses}"


def case_forged_log_line(url: str, server: Server) -> str:
    answer = exchange(url, request_bytes("GET", "/predict%0AFORGED-LINE%20injected"))
    time.sleep(0.5)
    forged = any(
        line.startswith("FORGED-LINE") for line in server.log_path.read_text().splitlines()
    )
    return f"{describe(answer)}; forged log line: {'yes' if forged else 'no'}"


def case_host_header_redirect(url: str) -> str:
    answer = exchange(
        url,
        request_bytes("GET", "/ui", {"Host": "evil.example"}).replace(
            b"Host: 127.0.0.1\r\n", b"", 1
        ),
    )
    return f"{answer.status} Location: {answer.headers.get('location')}"


CASES: list[tuple[str, Callable[..., str]]] = [
    ("/v2 infer whose body never finishes arriving", case_v2_slow_body),
    (
        "/v2 infer of 3 x 40 MP PNGs, 4 times (decoding past the 3 s deadline)",
        case_v2_decodes_past_the_deadline,
    ),
    ("78 kB PNG of 1 x 40,000,000 pixels", case_strip_png),
    ("/predict_batch of 48 x 40 MP 1-bit PNGs", case_batch_of_bitonal_pngs),
    ("progressive JPEG with 1,200 extra scans (24 MP, 80 kB)", case_many_scans_jpeg),
    ("PNG with 60 x 1 MB zTXt chunks", case_text_chunks_png),
    ("multipart part head with 9 MiB of ';'", case_long_part_head),
    ("32 MiB request header", case_huge_header),
    ("500 request headers", case_many_headers),
    (f"{IDLE_CONNECTIONS} idle connections", case_idle_connections),
    (f"{SLOWLORIS_CONNECTIONS} slowloris connections (a byte a second)", case_slowloris),
    ("line feed in the path of a request refused with 401", case_forged_log_line),
    ("GET /ui with Host: evil.example", case_host_header_redirect),
]


def describe(answer: Answer) -> str:
    if answer.status is None:
        return f"closed without an answer after {answer.seconds:.1f} s"
    return f"{answer.status} in {answer.seconds:.1f} s: {answer.error()[:90]}"


def run_cases(server: Server) -> dict[str, Any]:
    rows = []
    start_rss = server.tree_rss_mib()
    for name, case in CASES:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        assert server.process is not None
        with Watch(server.url, server.process.pid) as watch:
            if "server" in case.__code__.co_varnames[: case.__code__.co_argcount]:
                outcome = case(server.url, server)
            else:
                outcome = case(server.url)
        rows.append(
            {
                "case": name,
                "outcome": outcome,
                "longest_livez_s": round(watch.longest_livez, 3),
                "livez_failures": watch.livez_failures,
                "peak_tree_rss_mib": round(watch.peak_tree_mib, 1),
            }
        )
    time.sleep(2)
    settled = server.tree_rss_mib()
    return {
        "start_rss_mib": round(start_rss, 1),
        "settled_rss_mib": round(settled, 1),
        "rows": rows,
    }


def measure(
    tree: Path, subject: str, scratch: Path, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    home = scratch / f"home-{subject}"
    import_model(home, tree=tree)
    env = {**SERVER_ENV, **(extra_env or {})}
    server = dlops_server(home, scratch, env, tree=tree, subject=subject)
    with running(server):
        return run_cases(server)


def markdown(data: dict[str, Any]) -> list[str]:
    command = "python -m bench.hostile"
    if data.get("baseline"):
        command += f" --baseline {data['baseline']}"
    if any("RETURN_MEMORY" in subject for subject in data["subjects"]):
        command += " --allocator-defaults"
    info = data["machine"]
    machine = f"{info['cpu_model']}, {info['cpus_usable']} usable cores"
    lines = [
        "# Hostile input: what each attack gets back and what it costs the server",
        "",
        f"`{command}` on {machine}. One worker, `API_KEY` set, `DLOPS_REQUEST_TIMEOUT_SECONDS=3`.",
        "Longest /livez: the longest any /livez request (asked every 0.1 s) waited while the "
        "case ran.",
        "",
    ]
    for subject, result in data["subjects"].items():
        lines += [
            f"## {subject}",
            "",
            f"Tree RSS at start {result['start_rss_mib']} MiB, after all cases "
            f"{result['settled_rss_mib']} MiB.",
            "",
            "| case | answer | longest /livez | /livez failures | peak tree RSS MiB |",
            "|---|---|---|---|---|",
        ]
        for row in result["rows"]:
            outcome = re.sub(r"\s+", " ", row["outcome"]).replace("|", "\\|")
            lines.append(
                f"| {row['case']} | {outcome} | {row['longest_livez_s']:.2f} s "
                f"| {row['livez_failures']} | {row['peak_tree_rss_mib']:.0f} |"
            )
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a commit to measure first, side by side")
    parser.add_argument(
        "--allocator-defaults",
        action="store_true",
        help="also measure this checkout with DLOPS_RETURN_MEMORY=0 (what the allocator keeps)",
    )
    args = parser.parse_args(argv)
    data: dict[str, Any] = {
        "machine": machine_info(),
        "subjects": {},
        "baseline": args.baseline,
    }
    with tempfile.TemporaryDirectory(prefix="dlops-hostile-") as directory:
        scratch = Path(directory)
        if args.baseline:
            tree, commit = baseline_tree(args.baseline, scratch / "baseline")
            print(f"baseline {commit[:10]}", file=sys.stderr)
            data["subjects"][f"before ({commit[:10]})"] = measure(tree, "before", scratch)
        print("this checkout", file=sys.stderr)
        data["subjects"]["now"] = measure(ROOT, "now", scratch)
        if args.allocator_defaults:
            print("this checkout, glibc's allocator defaults", file=sys.stderr)
            data["subjects"]["now, DLOPS_RETURN_MEMORY=0 (glibc's defaults)"] = measure(
                ROOT, "defaults", scratch, {"DLOPS_RETURN_MEMORY": "0"}
            )
    lines = markdown(data)
    write_results(RESULTS, "hostile", data, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    run_study(main)
