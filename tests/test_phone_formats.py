"""HEIC/HEIF and AVIF uploads: the photos phones take, under the limits of every other format.

The files are written at test time by the encoders the service's readers pair with: x265 through
pillow-heif for HEIC, libaom through Pillow for AVIF. The hostile ones are real encodings with
their headers changed afterwards: a declared size apart from the coded stream's, parameter sets
inside the item's data wider than the ones the file declares, a cut-off file.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pillow_heif
import pytest
from PIL import AvifImagePlugin, ExifTags, Image

from dlops.pipeline.decode import (
    ACCEPTED_FORMATS,
    CODED_LAYOUT_KEY,
    EXPECTED_UPLOAD,
    DecodeLimits,
    ImageError,
    ImageRefusedError,
    ImageTooLargeError,
    NotAnImageError,
    decode_cost,
    decode_image,
    open_image,
    reduced_size,
)
from dlops.pipeline.memory import reset_peak_resident
from dlops.pipeline.phone_formats import coded_layout
from tests.conftest import FIXTURES, ROOT

WIDTH, HEIGHT = 640, 480
# x265's fastest preset: a 2-megapixel HEIC in half a second instead of five.
FAST_HEVC = {"preset": "ultrafast"}
THREE = FIXTURES / "digits" / "test0300_digit3.png"
ZERO = FIXTURES / "digits" / "test0000_digit0.png"


def photo(width: int = WIDTH, height: int = HEIGHT, mode: str = "RGB") -> Image.Image:
    """Photo-like: smooth gradients, hard edges (a checkerboard) and a little sensor noise."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [x * 255 // width, y * 255 // height, ((x // 40 + y // 40) % 2) * 160 + 40], axis=-1
    )
    noise = np.random.default_rng(7).integers(-6, 7, pixels.shape)
    image = Image.fromarray((pixels + noise).clip(0, 255).astype(np.uint8))
    if mode == "RGBA":
        image.putalpha(Image.fromarray(((x + y) % 256).astype(np.uint8)))
    return image.convert(mode)


def heic(image: Image.Image, quality: int = 90, **options: object) -> bytes:
    buffer = io.BytesIO()
    # A copy: pillow-heif adds the chroma option to the dict it is given.
    heif = pillow_heif.from_pillow(image)
    heif.save(buffer, quality=quality, enc_params=dict(FAST_HEVC), **options)
    return buffer.getvalue()


def heic_16_bit(image: Image.Image) -> bytes:
    """A 10-bit HEIC (pillow-heif writes 16-bit input at 10 bits); grey ones decode as I;16."""
    mode = "L;16" if image.mode == "L" else "RGB;16"
    samples = np.asarray(image.convert("L" if image.mode == "L" else "RGB")).astype(np.uint16)
    buffer = io.BytesIO()
    heif = pillow_heif.from_bytes(mode, image.size, (samples * 257).tobytes())
    heif.save(buffer, quality=90, enc_params=dict(FAST_HEVC))
    return buffer.getvalue()


def avif(image: Image.Image, quality: int = 90, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "AVIF", quality=quality, speed=8, **options)
    return buffer.getvalue()


def exif_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif.tobytes()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


def mean_difference(first: np.ndarray, second: np.ndarray) -> float:
    assert first.shape == second.shape
    return float(np.abs(first - second).mean())


# -- the ISO base media boxes the hostile files are made from ------------------------------------


def find_boxes(data: bytes, kind: bytes) -> list[int]:
    """Offsets of every box of ``kind`` (a plain byte search: fine for the files made here)."""
    offsets, start = [], data.find(kind)
    while start >= 0:
        offsets.append(start - 4)
        start = data.find(kind, start + 1)
    return offsets


def with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with every 'ispe' (the size each item declares) set to width x height."""
    patched = bytearray(data)
    for box in find_boxes(data, b"ispe"):
        struct.pack_into(">II", patched, box + 12, width, height)
    return bytes(patched)


def with_major_brand(data: bytes, brand: bytes) -> bytes:
    return data[:8] + brand + data[12:]


def hvcc_nal_units(data: bytes) -> list[bytes]:
    """The parameter sets in a single-image HEIC's 'hvcC'."""
    (box,) = find_boxes(data, b"hvcC")
    position, units = box + 8 + 22, []
    arrays, position = data[position], position + 1
    for _ in range(arrays):
        (count,) = struct.unpack_from(">H", data, position + 1)
        position += 3
        for _ in range(count):
            (length,) = struct.unpack_from(">H", data, position)
            units.append(data[position + 2 : position + 2 + length])
            position += 2 + length
    return units


def single_extent(data: bytes) -> tuple[int, int, int, int]:
    """(base offset, position of the extent length field, extent offset, length) of the only
    item of a single-image HEIC as pillow-heif writes it (iloc version 0, 4-byte fields)."""
    (box,) = find_boxes(data, b"iloc")
    assert data[box + 8] in (0, 1) and data[box + 12 : box + 14] == b"\x44\x40"
    (count,) = struct.unpack_from(">H", data, box + 14)
    assert count == 1
    position = box + 16 + 2 + (2 if data[box + 8] == 1 else 0) + 2
    (base,) = struct.unpack_from(">I", data, position)
    (extents,) = struct.unpack_from(">H", data, position + 4)
    assert extents == 1
    offset, length = struct.unpack_from(">II", data, position + 6)
    return base, position + 10, offset, length


def with_inband_parameter_sets(declared: bytes, real: bytes) -> bytes:
    """``declared``'s boxes over ``real``'s HEVC stream, whose parameter sets travel in front of
    it in the item's data: decoders use the last ones, so the file's 'hvcC' no longer says what
    is decoded (libheif checks the bit depth and the size afterwards, not the chroma)."""
    base, length_field, offset, _ = single_extent(declared)
    real_base, _, real_offset, real_length = single_extent(real)
    stream = real[real_base + real_offset : real_base + real_offset + real_length]
    payload = b"".join(struct.pack(">I", len(unit)) + unit for unit in hvcc_nal_units(real))
    payload += stream
    (mdat,) = find_boxes(declared, b"mdat")
    assert base + offset == mdat + 8
    head = bytearray(declared[:mdat])
    struct.pack_into(">I", head, length_field, len(payload))
    return bytes(head) + struct.pack(">I4s", 8 + len(payload), b"mdat") + payload


def with_pictures(data: bytes, count: int) -> bytes:
    """A single-image HEIC whose item holds its coded picture ``count`` times over: libde265
    decodes (and keeps) every one before libheif takes the first."""
    base, length_field, offset, length = single_extent(data)
    payload = data[base + offset : base + offset + length] * count
    (mdat,) = find_boxes(data, b"mdat")
    head = bytearray(data[:mdat])
    struct.pack_into(">I", head, length_field, len(payload))
    return bytes(head) + struct.pack(">I4s", 8 + len(payload), b"mdat") + payload


# -- decoding -------------------------------------------------------------------------------------


ENCODERS: dict[str, Callable[..., bytes]] = {"HEIF": heic, "AVIF": avif}
# Mean absolute difference (0-255) from the source a decode must stay within: x265 (ultrafast)
# and libaom at quality 90 measured 2.3 and 3.9 on photo() (its noise costs them most); the
# picture turned or mirrored by mistake differs by 85 or more.
CLOSE = {"HEIF": 4.0, "AVIF": 6.0}


def test_both_formats_are_accepted() -> None:
    Image.init()
    assert {"HEIF", "AVIF"} <= set(ACCEPTED_FORMATS)
    # Both accept the generic 'mif1' brand; libheif here has no AV1 decoder, so AVIF goes first.
    assert ACCEPTED_FORMATS.index("AVIF") < ACCEPTED_FORMATS.index("HEIF")
    assert "HEIC/HEIF" in EXPECTED_UPLOAD and "AVIF" in EXPECTED_UPLOAD
    # pillow-heif's opener for HEIF only: Pillow's own plugin reads AVIF.
    assert Image.OPEN["AVIF"][0] is AvifImagePlugin.AvifImageFile
    assert Image.OPEN["HEIF"][0] is pillow_heif.HeifImageFile


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
def test_decodes_close_to_the_source(image_format: str) -> None:
    source = photo()
    data = ENCODERS[image_format](source)
    opened = open_image(data)
    assert opened.format == image_format
    assert opened.size == (WIDTH, HEIGHT)
    decoded = decode_image(data)
    assert decoded.size == (WIDTH, HEIGHT)
    assert mean_difference(pixels(decoded), pixels(source)) < CLOSE[image_format]


@pytest.mark.parametrize(
    ("image_format", "mode", "expected"),
    [("HEIF", "RGBA", "RGBA"), ("HEIF", "L", "L"), ("AVIF", "RGBA", "RGBA"), ("AVIF", "L", "L")],
)
def test_alpha_and_grey_are_decoded(image_format: str, mode: str, expected: str) -> None:
    source = photo(320, 240, mode)
    decoded = decode_image(ENCODERS[image_format](source))
    assert decoded.mode == expected
    difference = np.abs(np.asarray(decoded).astype(int) - np.asarray(source).astype(int))
    assert difference.mean() < CLOSE[image_format] * 2


def test_10_bit_heic_is_decoded_to_8_bits() -> None:
    source = photo(320, 240)
    data = heic_16_bit(source)
    assert pillow_heif.open_heif(io.BytesIO(data)).info["bit_depth"] == 10
    decoded = decode_image(data)
    assert decoded.mode == "RGB"
    assert mean_difference(pixels(decoded), pixels(source)) < CLOSE["HEIF"]


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
def test_generic_mif1_brand_goes_to_the_right_reader(image_format: str) -> None:
    data = with_major_brand(ENCODERS[image_format](photo(160, 120)), b"mif1")
    assert open_image(data).format == image_format
    assert decode_image(data).size == (160, 120)


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
def test_exif_orientation_is_applied_once(image_format: str) -> None:
    """A camera held upright: stored landscape, to be turned 90 degrees clockwise to view.

    Both encoders write it as the container's rotation ('irot'); pillow-heif also keeps
    orientation 6 in the EXIF, as iPhones do. libheif turns the pixels and pillow-heif resets the
    EXIF orientation; Pillow's AVIF reader leaves the pixels and states irot as the EXIF
    orientation, which load_reduced applies. Either way: turned once.
    """
    source = photo()
    data = ENCODERS[image_format](source, exif=exif_orientation(6))
    assert find_boxes(data, b"irot")
    if image_format == "HEIF":
        stored = Image.Exif()
        stored.load(pillow_heif.open_heif(io.BytesIO(data)).info["exif"])
        assert stored[ExifTags.Base.Orientation] == 6  # both, like a phone's
    decoded = decode_image(data)
    upright = pixels(source.transpose(Image.Transpose.ROTATE_270))  # 90 degrees clockwise
    assert decoded.size == (HEIGHT, WIDTH)
    assert mean_difference(pixels(decoded), upright) < CLOSE[image_format]


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
@pytest.mark.parametrize("reduction", [2, 3, 4, 8])
def test_reduced_decode(image_format: str, reduction: int) -> None:
    """Neither codec decodes at a reduced scale: decoded whole, then reduce()d like PNG."""
    source = photo()
    data = ENCODERS[image_format](source)
    decoded = decode_image(data, reduction=lambda width, height: reduction)
    assert decoded.size == reduced_size(WIDTH, HEIGHT, reduction)
    expected = pixels(decode_image(data).reduce(reduction))
    assert mean_difference(pixels(decoded), expected) == 0
    # Only the copies made after decoding (reduce's, an AVIF's transpose) shrink with it.
    whole = decode_cost(open_image(data), 1) - WIDTH * HEIGHT * 4
    assert decode_cost(open_image(data), reduction) > whole


def test_reduced_decode_of_a_turned_avif_is_upright() -> None:
    source = photo()
    decoded = decode_image(avif(source, exif=exif_orientation(6)), reduction=lambda w, h: 4)
    upright = pixels(source.transpose(Image.Transpose.ROTATE_270).reduce(4))
    assert decoded.size == (HEIGHT // 4, WIDTH // 4)
    assert mean_difference(pixels(decoded), upright) < CLOSE["AVIF"]


# -- refusals -------------------------------------------------------------------------------------


def refuse_to_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(pillow_heif.HeifImageFile, "load", load)
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "load", load)


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
@pytest.mark.parametrize(
    ("width", "height"),
    [(8000, 6000), (20_000, 20_000), (100_000, 100_000)],
    ids=["48MP", "400MP", "10GP"],
)
def test_huge_declared_size_is_refused_from_the_header(
    image_format: str, width: int, height: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = with_declared_size(ENCODERS[image_format](photo(64, 48)), width, height)
    assert len(data) < 20_000
    refuse_to_decode(monkeypatch)
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(data)
    assert caught.value.status == 413
    assert f"{width * height:,}" in str(caught.value)
    assert "40,000,000" in str(caught.value)


def test_avif_stream_larger_than_it_declares_is_counted_and_limited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libavif decodes the AV1 stream at its own size, then scales it to the declared one."""
    data = with_declared_size(avif(photo()), 64, 48)
    opened = open_image(data)
    assert opened.size == (64, 48)
    layout = opened.info[CODED_LAYOUT_KEY]
    assert layout.largest == (WIDTH, HEIGHT)
    honest = decode_cost(open_image(avif(photo())), 1)
    assert decode_cost(opened, 1) > honest * 0.6  # not the cost of a 64x48 picture
    refuse_to_decode(monkeypatch)
    with pytest.raises(ImageTooLargeError) as caught:
        open_image(data, DecodeLimits(max_pixels=100_000))
    assert caught.value.status == 413
    assert f"{WIDTH}x{HEIGHT}" in str(caught.value)


def test_heic_stream_wider_than_it_declares_is_counted() -> None:
    """4:4:4 parameter sets inside the item's data, 4:2:0 in its 'hvcC': decoded as 4:4:4."""
    source = photo()
    declared = heic(source)
    wide = heic(source, chroma=444)
    hostile = with_inband_parameter_sets(declared, wide)
    assert open_image(hostile).info["chroma"] == 420  # what pillow-heif reads from the header
    layout = coded_layout(hostile, "HEIF")
    assert layout.decoder_bytes == coded_layout(wide, "HEIF").decoder_bytes
    assert layout.decoder_bytes > coded_layout(declared, "HEIF").decoder_bytes
    decoded = decode_image(hostile)  # libheif decodes it: the cost had to be the 4:4:4 one
    assert mean_difference(pixels(decoded), pixels(source)) < CLOSE["HEIF"]


def test_heic_item_of_several_pictures_is_counted_for_each() -> None:
    data = heic(photo())
    one, four = coded_layout(data, "HEIF"), coded_layout(with_pictures(data, 4), "HEIF")
    assert four.decoder_bytes > 2.5 * one.decoder_bytes
    assert decode_image(with_pictures(data, 4)).size == (WIDTH, HEIGHT)


def test_heic_stream_larger_than_it_declares_is_not_decoded() -> None:
    """libheif refuses an HEVC picture beyond its 'ispe' (+64) before allocating it."""
    data = with_declared_size(heic(photo()), 64, 48)
    with pytest.raises(NotAnImageError) as caught:
        decode_image(data)
    assert caught.value.status == 400


def test_animated_avif_is_refused() -> None:
    frames = [photo(64, 48), photo(64, 48).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = avif(frames[0], save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(ImageRefusedError) as caught:
        decode_image(data)
    assert caught.value.status == 400
    assert "image sequence" in str(caught.value)


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
@pytest.mark.parametrize("kept", [0.98, 0.75, 0.5, 0.1])
def test_truncated_file_is_refused_with_a_clear_message(image_format: str, kept: float) -> None:
    data = ENCODERS[image_format](photo())
    with pytest.raises(NotAnImageError) as caught:
        decode_image(data[: int(len(data) * kept)])
    assert caught.value.status == 400
    assert "damaged or truncated" in str(caught.value)
    assert EXPECTED_UPLOAD in str(caught.value)


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
def test_cut_inside_the_header_is_not_an_image(image_format: str) -> None:
    data = ENCODERS[image_format](photo())
    for kept in (12, 40, 120, 300):
        with pytest.raises(NotAnImageError) as caught:
            decode_image(data[:kept])
        assert caught.value.status == 400
        assert EXPECTED_UPLOAD in str(caught.value)


@pytest.mark.parametrize("image_format", ["HEIF", "AVIF"])
def test_damaged_bytes_give_a_picture_or_an_image_error(image_format: str) -> None:
    """Bytes changed at random, mostly in the boxes and stream headers: never another error."""
    rng = np.random.default_rng(11)
    valid = [ENCODERS[image_format](photo(96, 64)), ENCODERS[image_format](photo(96, 64, "RGBA"))]
    for _ in range(150):
        data = bytearray(valid[int(rng.integers(0, len(valid)))])
        for _ in range(int(rng.integers(1, 6))):
            reach = 700 if rng.random() < 0.8 else len(data)
            data[int(rng.integers(0, min(reach, len(data))))] = int(rng.integers(0, 256))
        try:
            decoded = decode_image(bytes(data), DecodeLimits(max_pixels=1_000_000))
        except ImageError as error:
            assert 400 <= error.status < 500
            continue
        assert decoded.width * decoded.height <= 1_000_000


# -- memory ---------------------------------------------------------------------------------------

# Peak resident memory of load_reduced in a fresh interpreter: /proc's high-water mark, reset
# once the header is read. Blocks of 64 KiB or more are mapped on their own (as the service's
# allocator settings do from 1 MiB), so memory freed by one step is not silently reused by the
# next and every large buffer shows in the peak.
MEASURE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from dlops.pipeline.decode import decode_cost, load_reduced, open_image
    from dlops.pipeline.memory import peak_resident_bytes, reset_peak_resident, resident_bytes

    image = open_image(Path(sys.argv[1]).read_bytes())
    reduction = int(sys.argv[2])
    cost = decode_cost(image, reduction)
    assert reset_peak_resident()
    before = resident_bytes()
    decoded = load_reduced(image, reduction)
    print(peak_resident_bytes() - before, cost)
    """
)


def measured_peak(path: Path, reduction: int) -> tuple[int, int]:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), str(reduction)],
        cwd=ROOT,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    peak, cost = map(int, result.stdout.split())
    return peak, cost


LARGE = (1600, 1200)
PHONE = (4032, 3024)  # a 12-megapixel phone camera


def large(mode: str = "RGB") -> Image.Image:
    return photo(*LARGE, mode)


# name: (the file, the reduction load_reduced is asked for)
MEMORY_CASES: dict[str, tuple[Callable[[], bytes], int]] = {
    "heic": (lambda: heic(large()), 1),
    "heic-reduced": (lambda: heic(large()), 4),
    "heic-grid-turned": (lambda: heic(large(), tile_size=512, exif=exif_orientation(6)), 1),
    "heic-alpha": (lambda: heic(large("RGBA")), 1),
    "heic-10-bit": (lambda: heic_16_bit(large()), 1),
    "heic-grey": (lambda: heic(large("L")), 1),
    "heic-10-bit-grey-reduced": (lambda: heic_16_bit(large("L")), 4),
    "heic-444-inside-420": (
        lambda: with_inband_parameter_sets(heic(large()), heic(large(), chroma=444)),
        1,
    ),
    "heic-8-pictures-in-one-item": (lambda: with_pictures(heic(large()), 8), 1),
    "heic-small": (lambda: heic(photo(28, 28, "L")), 1),
    "heic-12mp-grid": (lambda: heic(photo(*PHONE), tile_size=512), 1),
    "avif": (lambda: avif(large()), 1),
    "avif-turned-reduced": (lambda: avif(large(), exif=exif_orientation(6)), 4),
    "avif-alpha": (lambda: avif(large("RGBA")), 1),
    "avif-444": (lambda: avif(large(), subsampling="4:4:4"), 1),
    "avif-grey": (lambda: avif(large("L")), 1),
    "avif-stream-beyond-declared": (lambda: with_declared_size(avif(large()), 160, 120), 1),
    "avif-small": (lambda: avif(photo(28, 28, "L")), 1),
    "avif-12mp": (lambda: avif(photo(*PHONE)), 1),
}


@pytest.mark.skipif(not reset_peak_resident(), reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.parametrize("name", MEMORY_CASES)
def test_decode_cost_is_an_upper_bound_of_the_memory_measured(name: str, tmp_path: Path) -> None:
    make, reduction = MEMORY_CASES[name]
    path = tmp_path / name
    path.write_bytes(make())
    peak, cost = measured_peak(path, reduction)
    assert peak <= cost, f"{name}: measured {peak:,} bytes, decode_cost {cost:,}"
    print(f"{name}: peak {peak / 2**20:.1f} MiB, decode_cost {cost / 2**20:.1f} MiB")


# -- through the real server ----------------------------------------------------------------------


def post(client: httpx.Client, data: bytes, name: str) -> httpx.Response:
    return client.post("/predict", files={"file": (name, data, "application/octet-stream")})


@pytest.mark.parametrize("digit", [THREE, ZERO], ids=["three", "zero"])
@pytest.mark.parametrize("size", [28, 224], ids=["mnist-size", "photo-size"])
def test_heic_and_avif_get_the_label_of_the_same_png(
    client: httpx.Client, digit: Path, size: int
) -> None:
    picture = Image.open(digit).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    png = io.BytesIO()
    picture.save(png, "PNG")
    expected = post(client, png.getvalue(), "digit.png")
    assert expected.status_code == 200, expected.text
    for name, data, media_type in (
        ("digit.heic", heic(picture, quality=-1, chroma=444), "image/heic"),  # lossless
        ("digit.avif", avif(picture, quality=100, subsampling="4:4:4"), "image/avif"),
    ):
        # As a multipart file, and as the raw body with the type a phone's browser gives it.
        for response in (
            post(client, data, name),
            client.post("/predict", content=data, headers={"Content-Type": media_type}),
        ):
            assert response.status_code == 200, f"{name}: {response.text}"
            assert response.json()["label"] == expected.json()["label"], name
            assert abs(response.json()["proba"] - expected.json()["proba"]) < 0.05, name


def test_damaged_and_huge_phone_photos_are_4xx_over_http(client: httpx.Client) -> None:
    data = heic(photo())
    truncated = post(client, data[: len(data) // 2], "cut.heic")
    assert truncated.status_code == 400, truncated.text
    assert "damaged or truncated" in truncated.json()["error"]
    huge = post(client, with_declared_size(avif(photo(64, 48)), 20_000, 20_000), "huge.avif")
    assert huge.status_code == 413, huge.text
    assert "400,000,000" in huge.json()["error"]
