"""``linear_window`` against the real ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from dlops.pipeline.preprocess.cv2_linear import linear_window

MODES = ("L", "RGB")


def pixels(width: int, height: int, mode: str, kind: str, seed: int = 0) -> np.ndarray:
    """uint8 [height, width] or [height, width, 3]: uniform noise, or smooth gradients and waves."""
    shape = (height, width) if mode == "L" else (height, width, 3)
    if kind == "random":
        return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    waves = [
        127.5 + 127.5 * np.sin(x / 7.3 + y / 11.1),
        255 * x / max(width - 1, 1),
        127.5 + 127.5 * np.cos((x - y) / 23.0),
    ]
    smooth = waves[0] if mode == "L" else np.stack(waves, axis=-1)
    return smooth.round().astype(np.uint8)


def reference(array: np.ndarray, resized: tuple[int, int]) -> np.ndarray:
    return cv2.resize(array, resized, interpolation=cv2.INTER_LINEAR)


def window_of(
    array: np.ndarray,
    mode: str,
    resized: tuple[int, int],
    offset: tuple[int, int],
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """(linear_window's window, the same window of cv2.resize's whole result)."""
    image = Image.fromarray(array)
    assert image.mode == mode
    got = linear_window(image, resized, offset, size)
    (left, top), (width, height) = offset, size
    return got, reference(array, resized)[top : top + height, left : left + width]


def shorter_side(width: int, height: int, size: int) -> tuple[int, int]:
    percent = size / min(width, height)
    return round(width * percent), round(height * percent)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["random", "smooth"])
@pytest.mark.parametrize(
    "source", [(640, 480), (300, 901), (1500, 2000), (200, 150), (1000, 1300), (333, 777)]
)
def test_shorter_side_256_centre_224(source: tuple[int, int], kind: str, mode: str) -> None:
    resized = shorter_side(*source, 256)
    offset = ((resized[0] - 224) // 2, (resized[1] - 224) // 2)
    got, expected = window_of(pixels(*source, mode, kind), mode, resized, offset, (224, 224))
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["random", "smooth"])
@pytest.mark.parametrize(
    ("source", "resized"),
    [
        ((640, 480), (320, 240)),  # exact halving: cv2 switches to INTER_AREA
        ((300, 902), (150, 451)),
        ((640, 480), (320, 480)),  # halved across only: stays INTER_LINEAR
        ((200, 150), (517, 389)),  # upscales
        ((200, 150), (400, 300)),
        ((31, 17), (640, 480)),
        ((333, 777), (101, 233)),  # odd sizes
        ((1500, 2000), (97, 1003)),
        ((640, 480), (640, 480)),  # the same size: cv2 copies
        ((640, 480), (640, 257)),  # the same width only
        ((4000, 17), (256, 40)),  # extreme aspect ratios
        ((17, 4000), (300, 31)),
        ((2000, 3), (5, 500)),
        ((1, 1), (3, 5)),  # one-pixel sources
        ((1, 37), (5, 80)),
        ((1, 50), (1, 20)),
        ((29, 1), (7, 1)),
        ((29, 1), (60, 4)),
        ((2, 2), (1, 1)),
        ((500, 400), (1, 1)),
    ],
)
def test_whole_image(
    source: tuple[int, int], resized: tuple[int, int], kind: str, mode: str
) -> None:
    """A window at (0, 0) the size of the resized image is cv2.resize's whole result."""
    got, expected = window_of(pixels(*source, mode, kind), mode, resized, (0, 0), resized)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("source", "resized"), [((50, 40), (173, 131)), ((640, 480), (97, 71))])
def test_corners_and_edges(source: tuple[int, int], resized: tuple[int, int], mode: str) -> None:
    """Windows against each border, where cv2 clamps columns and clips rows."""
    array = pixels(*source, mode, "random", seed=3)
    width, height = 20, 15
    right, bottom = resized[0] - width, resized[1] - height
    for offset in [(0, 0), (right, 0), (0, bottom), (right, bottom), (right // 2, 0), (0, 7)]:
        got, expected = window_of(array, mode, resized, offset, (width, height))
        assert np.array_equal(got, expected), offset


@pytest.mark.parametrize("mode", MODES)
def test_random_windows(mode: str) -> None:
    rng = np.random.default_rng(7)
    for case in range(150):
        source = (int(rng.integers(1, 700)), int(rng.integers(1, 700)))
        resized = (int(rng.integers(1, 900)), int(rng.integers(1, 900)))
        size = (int(rng.integers(1, resized[0] + 1)), int(rng.integers(1, resized[1] + 1)))
        offset = (
            int(rng.integers(0, resized[0] - size[0] + 1)),
            int(rng.integers(0, resized[1] - size[1] + 1)),
        )
        array = pixels(*source, mode, "random", seed=case)
        got, expected = window_of(array, mode, resized, offset, size)
        assert np.array_equal(got, expected), (source, resized, offset, size)


def test_flat_extremes_stay_put() -> None:
    """All-0 and all-255 images, where an overflowing or biased sum would show first."""
    for value in (0, 255):
        array = np.full((37, 53, 3), value, dtype=np.uint8)
        for resized in [(211, 97), (5, 3), (53, 300), (106, 74)]:
            got, expected = window_of(array, "RGB", resized, (0, 0), resized)
            assert np.array_equal(got, expected)
            assert (got == value).all()


def test_shapes() -> None:
    gray = Image.new("L", (40, 30), 9)
    color = Image.new("RGB", (40, 30), (1, 2, 3))
    assert linear_window(gray, (80, 60), (3, 4), (10, 7)).shape == (7, 10)
    assert linear_window(color, (80, 60), (3, 4), (10, 7)).shape == (7, 10, 3)


def test_rejects_other_modes_and_windows_outside() -> None:
    with pytest.raises(ValueError, match="L or RGB"):
        linear_window(Image.new("RGBA", (4, 4)), (8, 8), (0, 0), (8, 8))
    image = Image.new("RGB", (40, 30))
    for offset, size in [
        ((0, 0), (81, 60)),
        ((1, 0), (80, 60)),
        ((-1, 0), (5, 5)),
        ((0, 0), (0, 5)),
    ]:
        with pytest.raises(ValueError, match="not inside"):
            linear_window(image, (80, 60), offset, size)
