"""bench/repository.py's pure helpers: hey's text report, the probe's verdict, the alternation
of versions, the speed medians and ratios, the multipart body and the photo-like JPEGs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bench.load import BOUNDARY
from bench.repository import (
    Probe,
    Swap,
    alternating,
    check_probes,
    multipart_files,
    noise_for,
    parse_hey_summary,
    photo_jpeg,
    speed_ratios,
    summarise_speed,
)

HEY_REPORT = """
Summary:
  Total:\t6.3012 secs
  Slowest:\t0.1195 secs
  Fastest:\t0.0004 secs
  Average:\t0.0089 secs
  Requests/sec:\t1776.0000

Latency distribution:
  10% in 0.0040 secs
  50% in 0.0080 secs
  99% in 0.0245 secs

Status code distribution:
  [200]\t11000 responses
  [503]\t2 responses

Error distribution:
  [3]\tPost "http://127.0.0.1:1/predict": EOF
"""


def test_hey_report_counts_statuses_and_requests_without_an_answer() -> None:
    parsed = parse_hey_summary(HEY_REPORT)
    assert parsed["statuses"] == {"200": 11000, "503": 2}
    assert parsed["errors"] == {'Post "http://127.0.0.1:1/predict": EOF': 3}
    assert parsed["sent"] == 11005
    assert parsed["non_200"] == 5
    assert parsed["total_s"] == pytest.approx(6.3012)
    assert parsed["rps"] == pytest.approx(11000 / 6.3012)
    assert parsed["p99_ms"] == pytest.approx(24.5)
    assert parsed["slowest_ms"] == pytest.approx(119.5)


def test_a_clean_hey_report_has_no_errors() -> None:
    clean = HEY_REPORT.split("Error distribution:")[0].replace("  [503]\t2 responses\n", "")
    parsed = parse_hey_summary(clean)
    assert parsed["errors"] == {} and parsed["non_200"] == 0 and parsed["sent"] == 11000


def _swap(version: str, label: str, started: float, returned: float) -> Swap:
    return Swap(version, label, started, returned, 200, version)


def test_probes_between_reloads_must_carry_the_version_just_loaded() -> None:
    swaps = [_swap("b", "no 3", 10.0, 10.5), _swap("a", "3", 20.0, 20.2)]
    probes = [
        Probe(1.0, 1.1, 200, "3"),  # before the first reload: A
        Probe(10.2, 10.3, 200, "3"),  # overlaps the first reload: either
        Probe(11.0, 11.1, 200, "no 3"),  # after it: B
        Probe(19.9, 20.1, 200, "no 3"),  # overlaps the second
        Probe(21.0, 21.1, 200, "no 3"),  # after the second, still B: wrong
        Probe(22.0, 22.1, 503, None),
    ]
    verdict = check_probes(probes, swaps, "3")
    assert verdict["probes"] == 6 and verdict["non_200"] == 1
    assert verdict["checked"] == 4
    assert [(w["sent"], w["expected"]) for w in verdict["wrong"]] == [(21.0, "3"), (22.0, "3")]
    assert verdict["overlapping_a_reload"] == {"3": 1, "no 3": 1}


def test_reloads_alternate_starting_with_the_version_not_served() -> None:
    labels = {"a": "3", "b": "no 3"}
    assert alternating(labels, "a", 5) == ["b", "a", "b", "a", "b"]
    assert alternating(labels, "b", 2) == ["a", "b"]


def _run(round_: int, subject: str, rps: float, p99: float) -> dict[str, object]:
    return {
        "round": round_,
        "subject": subject,
        "rps": rps,
        "p50_ms": 1.0,
        "p99_ms": p99,
        "non_200": 0,
        "sent": 100,
    }


def test_speed_medians_and_ratios_of_medians_and_by_round() -> None:
    runs = [
        _run(1, "one", 100.0, 10.0),
        _run(1, "three", 90.0, 12.0),
        _run(2, "one", 200.0, 20.0),
        _run(2, "three", 200.0, 20.0),
        _run(3, "one", 300.0, 30.0),
        _run(3, "three", 240.0, 36.0),
    ]
    summary = summarise_speed(runs)
    assert summary["one"]["rps"] == 200.0 and summary["one"]["rps_min"] == 100.0
    assert summary["three"]["p99_ms"] == 20.0 and summary["three"]["sent"] == 300
    ratios = speed_ratios(runs, summary, "three", "one")
    assert ratios["rps"] == pytest.approx(1.0)
    assert ratios["rps_paired"] == pytest.approx(0.9)  # median of 0.9, 1.0, 0.8
    assert ratios["p99_ms_paired"] == pytest.approx(1.2)


def test_one_body_carries_every_file_in_the_field_file() -> None:
    body = multipart_files([b"first", b"second"], "photo{}.jpg", "image/jpeg")
    assert body.count(f"--{BOUNDARY}\r\n".encode()) == 2
    assert body.endswith(f"--{BOUNDARY}--\r\n".encode())
    assert b'filename="photo1.jpg"' in body and b"\r\n\r\nsecond\r\n" in body


def test_photo_jpegs_grow_with_the_noise_and_the_bisection_finds_a_size() -> None:
    size = (160, 120)
    quiet, noisy = photo_jpeg(0, 1.0, size), photo_jpeg(0, 30.0, size)
    assert len(quiet) < len(noisy)
    with Image.open(io.BytesIO(noisy)) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", size, "RGB")
    target = (len(quiet) + len(noisy)) // 2
    made = len(photo_jpeg(0, noise_for(target, size), size))
    assert abs(made - target) / target < 0.05
