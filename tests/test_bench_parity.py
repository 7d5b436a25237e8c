"""bench/parity.py's pure pieces: the corpus's pictures, the sidecars, the figures and the report.

None of this needs the study's packages (requirements/parity.txt): the pictures are made here,
the sidecars are read by dlops alone; the one check that needs the bundled photos skips without.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from bench import parity
from dlops.model.resolve import sidecar
from dlops.model.steps import PROBE_SIZES, Pad, Resize, check_steps, final_size
from dlops.pipeline.parity import ImageParity
from tests.documents import page

# The input (height, width) of each model, from its graph: the sidecar's steps must end there.
INPUT_SIZES = {
    "orientation": (224, 224),
    "textline": (48, 192),
    "opennsfw": (224, 224),
    "docorient": (224, 224),
    "nudenet": (256, 256),
}


def _photo(width: int = 300, height: int = 200) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def test_variants_give_square_and_non_square_pictures_of_every_aspect() -> None:
    made = parity.variants(_photo())
    sizes = {suffix: picture.size for suffix, _group, picture, _fmt in made}
    assert sizes["square"] == (200, 200)
    assert sizes["wide"][0] / sizes["wide"][1] == pytest.approx(2.2, rel=0.01)
    assert sizes["tall"][1] / sizes["tall"][0] == pytest.approx(2.4, rel=0.02)
    assert max(sizes["small"]) == 96 and sizes["odd"] == (37, 53)
    assert sizes["turned"] == (200, 300) and sizes["enlarged"] == (750, 500)
    assert {group for _suffix, group, _picture, _fmt in made} <= set(parity.GROUPS)
    assert {fmt for *_rest, fmt in made} == {"JPEG", "PNG"}


def test_greyscale_stays_greyscale_and_alpha_is_dropped() -> None:
    grey = parity.variants(_photo().convert("L"))
    assert {picture.mode for _s, _g, picture, _f in grey} == {"L"}
    rgba = parity.variants(_photo().convert("RGBA"))
    assert {picture.mode for _s, _g, picture, _f in rgba} == {"RGB"}


def test_enlarge_to_12_mp_keeps_the_aspect_by_cropping() -> None:
    large = parity.enlarge_to(_photo(120, 100), parity.LARGE)
    assert large.size == (4032, 3024)
    assert parity.enlarge_to(_photo(100, 120), parity.LARGE[::-1]).size == (3024, 4032)


def test_text_lines_are_cut_from_a_rendered_page() -> None:
    lines = parity.text_lines(page(0), 7)
    assert 3 <= len(lines) <= 7
    for line in lines:
        assert line.width >= 2 * line.height and 6 <= line.height <= 200


def test_every_sidecar_parses_and_ends_at_its_model_input() -> None:
    assert {model.name for model in parity.MODELS} == set(INPUT_SIZES)
    for model in parity.MODELS:
        found = sidecar.read(model.sidecar)
        assert found.steps is not None, model.name
        height, width = INPUT_SIZES[model.name]
        check_steps(found.steps, height, width, 3)  # raises StepError otherwise
        for probe in PROBE_SIZES:
            assert final_size(found.steps, *probe) == (width, height)
        assert (
            json.loads(model.sidecar.read_text())["steps"]
            == parity.read_sidecar(model.sidecar)["json"]["steps"]
        )


def test_the_textline_sidecar_says_paddleocrs_resize_and_pad() -> None:
    steps = sidecar.read(parity.SPECS / "textline.preprocess.json").steps
    assert steps is not None
    resize, pad = steps
    assert isinstance(resize, Resize) and isinstance(pad, Pad)
    assert (resize.to, resize.resampling, resize.rounding_rule) == ("height", "opencv", "ceil")
    # PaddleOCR: width min(ceil(48 * w / h), 192), then zeros after normalising, on the right.
    assert resize.output_size(100, 33) == (146, 48)
    assert resize.output_size(1000, 33) == (192, 48)
    assert (pad.position, pad.after_normalize, pad.value) == ("top-left", True, (0.0,))


def _items(deltas: list[float], agrees: list[bool]) -> list[ImageParity]:
    return [
        ImageParity(f"{i}.png", ok, delta, "a" if ok else "b", "a")
        for i, (delta, ok) in enumerate(zip(deltas, agrees, strict=True))
    ]


def test_figures_leave_transparent_pictures_out_of_the_headline() -> None:
    items = _items([0.0, 0.01, 0.5, 0.9], [True, True, False, False])
    groups = {"0.png": "crop", "1.png": "document", "2.png": "12 MP", "3.png": "transparent"}
    result = parity.figures("--name only", items, groups)
    assert (result.images, result.agreeing) == (3, 2)
    assert result.median == pytest.approx(0.01) and result.max == pytest.approx(0.5)
    assert result.by_group["transparent"]["agreeing"] == 0
    assert result.worst[0]["image"] == "2.png"
    assert not parity.verdict(result)


def test_pixel_delta_is_in_pixel_units() -> None:
    gain = np.float32(1 / 255) / np.array([0.5, 0.5, 0.5], dtype=np.float32)[:, None, None]
    ours = np.zeros((3, 2, 2), dtype=np.float32)
    theirs = ours.copy()
    theirs[0, 0, 0] = 2 * float(gain[0, 0, 0])  # two grey levels
    assert parity.pixel_delta(ours, theirs, gain) == pytest.approx((2 / 12, 2.0), rel=1e-5)
    assert parity.pixel_delta(ours, ours[:, :1], gain) == (float("inf"), float("inf"))


def test_the_report_renders_from_figures() -> None:
    items = _items([0.0, 0.002], [True, True])
    groups = {"0.png": "crop", "1.png": "document"}
    served = parity.figures("--preprocess bench/parity_specs/x.preprocess.json", items, groups)
    tensor = {"all": {"images": 2, "identical": 2, "mean_px_median": 0.0, "mean_px_max": 0.0}}
    tensor["all"]["max_px"] = 0.0
    seconds = {key: {"images": 2, "mean_ms": 1.0} for key in ("dlops", "package")}
    result = parity.ModelResult(
        "x",
        "a family",
        "pkg==1",
        "m.onnx",
        10,
        "its pipeline",
        "pkg/pre.py",
        {"json": {"steps": []}, "steps": "resize"},
        served,
        parity.Figures("--name only", refused="input 'x' has a dynamic height; pass --size"),
        parity.figures("--size 48x192", items, groups),
        served,
        tensor,
        tensor,
        seconds,
    )
    samples = [
        parity.Sample("0.png", "crop", b"", (10, 10), "RGB"),
        parity.Sample("1.png", "document", b"", (10, 20), "L"),
    ]
    info = {
        "date": "today",
        "wall_s": 1.0,
        "quick": True,
        "cpu_model": "cpu",
        "cpus_usable": 2,
        "python": "3.11",
        "packages": {"onnxruntime": "1", "numpy": "2", "pillow": "3"},
        "opencv": "5",
        "git_commit": "abc",
        "git_dirty": False,
        "sources_sha256": "0" * 64,
        "load_average_1m_at_start": 0.5,
        "load_average_1m_at_end": 0.5,
    }
    text = parity.report([result], info, samples)
    assert "| x | a family | pkg==1 |" in text
    assert "refused (dynamic size); `--size 48x192`: 100.0% (2/2)" in text
    assert "x agrees" in text and "1 square and 1 not" in text


@pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None or importlib.util.find_spec("sklearn") is None,
    reason="the bundled photos come with requirements/parity.txt",
)
def test_the_bundled_photos_are_found_on_disk() -> None:
    found = parity.bundled(parity.PHOTOS + parity.TRANSPARENT)
    assert len({stem for stem, _path in found}) == len(parity.PHOTOS) + len(parity.TRANSPARENT)
    assert all(path.is_file() for _stem, path in found)
