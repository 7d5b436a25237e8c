"""The parity check at import (dlops/pipeline/parity.py, `import_model.py --expect`): against the
real document-orientation package's own pipeline, and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlops.model.resolve import Overrides, resolve_spec
from dlops.pipeline.parity import ParityError, Tolerance, check, parse_tolerance, read_answers
from tests import orientation_reference
from tests.conftest import ROOT, Server, orientation_model_path, run_import
from tests.documents import document
from tests.test_import_model import assert_one_line_error, imported, versions


def write_answers(folder: Path, images: list[bytes], probabilities: list[np.ndarray]) -> Path:
    """answers.json as docs/models.md writes it: each image beside it, its probabilities."""
    answers = []
    for index, (data, row) in enumerate(zip(images, probabilities, strict=True)):
        name = f"page{index}.jpg"
        (folder / name).write_bytes(data)
        answers.append({"image": name, "probabilities": [float(value) for value in row]})
    path = folder / "answers.json"
    path.write_text(json.dumps({"answers": answers}))
    return path


PAGES = ((1, 0), (2, 90), (3, 180), (4, 270), (5, 90), (6, 0))


@pytest.fixture(scope="module")
def pages() -> list[bytes]:
    # Pages small enough to be decoded at full size, photographed and not.
    return [
        document(seed, rotation, photo=seed % 2 == 0, size=(480, 680)) for seed, rotation in PAGES
    ]


@pytest.fixture(scope="module")
def reference(pages: list[bytes]) -> list[np.ndarray]:
    return [orientation_reference.reference_probabilities(page) for page in pages]


def test_the_packages_own_filter_is_exact_and_the_assumed_one_is_measured(
    tmp_path: Path, pages: list[bytes], reference: list[np.ndarray]
) -> None:
    path = orientation_model_path()
    expected = read_answers(write_answers(tmp_path, pages, reference), 4)
    exact = resolve_spec(path, Overrides(interpolation="lanczos")).spec
    report = check(path, exact, expected)
    assert report.agreement == 1.0 and report.passes(Tolerance())
    assert float(report.deltas().max()) < 1e-6
    assumed = check(path, resolve_spec(path).spec, expected)
    # cv2's bilinear instead of the package's Lanczos4: the same answers, other probabilities.
    assert assumed.agreement == 1.0
    assert 1e-4 < float(assumed.deltas().max()) < Tolerance().max_delta
    lines = assumed.lines(Tolerance(1.0, 0.0))
    assert lines[0].startswith("parity: FAILED: 6 images; top-1 agreement 6/6 (100.0%")
    assert lines[1].startswith("parity:   page") and "same answer" in lines[1]


def test_full_page_scans_are_decoded_whole_for_opencvs_resampling(tmp_path: Path) -> None:
    """A page of 1240x1754 could be decoded at half size; without antialiasing cv2's filter would
    then see other pixels, so it is decoded whole and the answers stay the package's."""
    scans = [document(seed, rotation, size=(1240, 1754)) for seed, rotation in PAGES[3:]]
    answers = [orientation_reference.reference_probabilities(scan) for scan in scans]
    expected = read_answers(write_answers(tmp_path, scans, answers), 4)
    path = orientation_model_path()
    report = check(path, resolve_spec(path, Overrides(interpolation="lanczos")).spec, expected)
    assert report.agreement == 1.0
    assert float(report.deltas().max()) < 1e-6


def test_import_with_expect_stores_only_what_agrees(
    tmp_path: Path, pages: list[bytes], reference: list[np.ndarray]
) -> None:
    home, folder = tmp_path / "home", tmp_path / "answers"
    folder.mkdir()
    answers = write_answers(folder, pages, reference)
    model = str(orientation_model_path())
    strict = ("--expect", str(answers), "--tolerance", "1,0.0001")
    refused = run_import(home, model, "--name", "orientation", *strict)
    assert_one_line_error(
        refused, "the stored steps do not reproduce answers.json, so nothing was stored"
    )
    assert versions(home) == []
    accepted = run_import(
        home, model, "--name", "orientation", "--interpolation", "lanczos", *strict
    )
    imported(accepted)
    assert "parity: passed: 6 images; top-1 agreement 6/6" in accepted.stdout


def test_a_wrong_label_is_named(
    tmp_path: Path, pages: list[bytes], reference: list[np.ndarray]
) -> None:
    shuffled = [np.roll(row, 1) for row in reference[:2]] + reference[2:]
    expected = read_answers(write_answers(tmp_path, pages, shuffled), 4)
    path = orientation_model_path()
    report = check(path, resolve_spec(path, Overrides(interpolation="lanczos")).spec, expected)
    assert report.agreement == pytest.approx(4 / 6)
    assert not report.passes(Tolerance())
    worst = report.lines(Tolerance())[1:3]
    assert {line.split(":")[1].strip() for line in worst} == {"page0.jpg", "page1.jpg"}
    assert all("here," in line and "there" in line for line in worst)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("not json", "not readable JSON"),
        ('{"answers": []}', "with at least one entry"),
        ('{"answers": [{"image": "page0.jpg", "probabilities": [0.5, 0.5]}]}', "4 finite number"),
        ('{"answers": [{"image": "nope.jpg", "probabilities": [1, 0, 0, 0]}]}', "no such image"),
        ('{"answers": [{"probabilities": [1, 0, 0, 0]}]}', 'expected {"image": PATH'),
    ],
)
def test_answers_files_that_cannot_be_checked(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "page0.jpg").write_bytes(b"")
    path = tmp_path / "answers.json"
    path.write_text(content)
    with pytest.raises(ParityError, match=fragment):
        read_answers(path, 4)


def test_tolerance_parsing() -> None:
    assert parse_tolerance("0.97,0.05") == Tolerance(0.97, 0.05)
    for text in ("0.97", "2,0.1", "a,b"):
        with pytest.raises(ValueError):
            parse_tolerance(text)


def test_the_twin_checks_a_running_server(
    tmp_path: Path, pages: list[bytes], reference: list[np.ndarray], orientation_server: Server
) -> None:
    answers = write_answers(tmp_path, pages, reference)
    command = [
        sys.executable,
        "-m",
        "dlops.pipeline.parity",
        str(answers),
        "--url",
        orientation_server.url,
    ]
    passed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.startswith("parity: passed: 6 images; top-1 agreement 6/6")
    strict = subprocess.run(
        [*command, "--tolerance", "1,0.00001"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert strict.returncode == 1 and strict.stdout.startswith("parity: FAILED")
    unreachable = subprocess.run(
        [*command[:-1], "http://127.0.0.1:9"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert unreachable.returncode == 2
    assert unreachable.stderr.startswith(
        "python -m dlops.pipeline.parity: error: http://127.0.0.1:9/"
    )
