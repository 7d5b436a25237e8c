"""What a large photo costs to decode and preprocess: at full size, and reduced as the core does it.

    python -m bench.decode_reduced

For each model (the digit model, the orientation model) and each picture (a 40 MP JPEG photo, a
12 MP one, a 24 MP PNG), one fresh process per measurement decodes and preprocesses the picture
either at full size (``decode_image`` without reduction, as before) or reduced (the core's path:
``Preprocessor.reduction``, JPEG draft, ``Image.reduce``); it reports the median time of 5 runs
and the process's peak RSS growth over its resting size (sampled every 2 ms). Side by side, in
one run. Writes bench/results/decode-reduced.{json,md}.
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.machine import machine_info
from bench.servers import ROOT
from bench.study import RESULTS, write_results

RUNS = 5
PICTURES = {
    "40 MP JPEG photo (7296x5472)": ((7296, 5472), "JPEG"),
    "12 MP JPEG photo (4032x3024)": ((4032, 3024), "JPEG"),
    "24 MP PNG (5656x4242)": ((5656, 4242), "PNG"),
}


def photo(size: tuple[int, int], kind: str) -> bytes:
    """A photo-like picture: smooth shading, a dark stroke, sensor noise."""
    width, height = size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height:4, 0:width:4]
    shade = 200 - 40 * (x / width) - 30 * (y / height)
    small = np.stack([shade, shade * 0.97, shade * 0.9], axis=-1)
    image = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize(size)
    pixels = np.asarray(image).copy()
    pixels[height // 4 : 3 * height // 4, width // 2 - width // 40 : width // 2 + width // 40] = 30
    pixels = np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, kind, quality=90)
    return buffer.getvalue()


def measure_in_this_process(model: str, picture: str, reduced: bool) -> dict[str, float]:
    """Run in a fresh process (see main): median seconds and peak RSS growth in MiB."""
    from dlops.model.spec import load_spec
    from dlops.pipeline.decode import DecodeLimits, decode_image, no_reduction
    from dlops.pipeline.memory import resident_bytes
    from dlops.pipeline.preprocess import Preprocessor

    spec = load_spec(Path(model))
    preprocessor = Preprocessor(spec)
    data = Path(picture).read_bytes()
    limits = DecodeLimits(max_pixels=60_000_000)
    reduction = preprocessor.reduction if reduced else no_reduction
    resting = resident_bytes()
    peak = resting
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, resident_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds = []
    for _ in range(RUNS):
        started = time.perf_counter()
        preprocessor(decode_image(data, limits, reduction))
        seconds.append(time.perf_counter() - started)
    stop.set()
    sampler.join()
    return {"seconds": statistics.median(seconds), "peak_mib": (peak - resting) / 2**20}


def spec_directory(model: Path, name: str, scratch: Path) -> Path:
    """The model's spec as import_model.py resolves it, saved where load_spec reads it."""
    from dlops.model.resolve import Overrides, resolve_spec
    from dlops.model.spec import save_spec

    directory = scratch / name
    directory.mkdir()
    save_spec(resolve_spec(model, Overrides()).spec, directory)
    return directory


def main() -> None:
    from tests.conftest import orientation_model_path

    models = {
        "digit (binary_classifier_3)": ROOT / "models" / "binary_classifier_3.onnx",
        "orientation (224x224 CNN)": orientation_model_path(),
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dlops-decode-") as directory:
        scratch = Path(directory)
        pictures = {}
        for name, (size, kind) in PICTURES.items():
            path = scratch / f"{len(pictures)}.{kind.lower()}"
            path.write_bytes(photo(size, kind))
            pictures[name] = path
        for model_name, model in models.items():
            specs = spec_directory(model, str(len(rows)), scratch)
            for picture_name, path in pictures.items():
                row: dict[str, Any] = {"model": model_name, "picture": picture_name}
                row["bytes"] = path.stat().st_size
                for reduced in (False, True):
                    result = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "bench.decode_reduced",
                            "--one",
                            str(specs),
                            str(path),
                            "1" if reduced else "0",
                        ],
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    row["reduced" if reduced else "full"] = json.loads(result.stdout)
                rows.append(row)
                print(row, file=sys.stderr)
    data = {"machine": machine_info(), "runs": RUNS, "rows": rows}
    lines = markdown(data)
    write_results(RESULTS, "decode-reduced", data, lines)
    print("\n".join(lines))


def markdown(data: dict[str, Any]) -> list[str]:
    info = data["machine"]
    lines = [
        "# Decoding a large photo: full size against reduced",
        "",
        f"`python -m bench.decode_reduced` on {info['cpu_model']}, {info['cpus_usable']} usable "
        f"cores. Decode and preprocess, median of {data['runs']} runs; peak RSS growth of a fresh "
        "process over its resting size.",
        "",
        "| model | picture | full: ms | full: peak MiB | reduced: ms | reduced: peak MiB "
        "| time ratio | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        full, reduced = row["full"], row["reduced"]
        lines.append(
            f"| {row['model']} | {row['picture']} | {full['seconds'] * 1000:.0f} "
            f"| {full['peak_mib']:.0f} | {reduced['seconds'] * 1000:.0f} "
            f"| {reduced['peak_mib']:.0f} | {full['seconds'] / reduced['seconds']:.1f}x "
            f"| {full['peak_mib'] / max(reduced['peak_mib'], 0.1):.1f}x |"
        )
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        spec, picture, reduced = sys.argv[2:5]
        print(json.dumps(measure_in_this_process(spec, picture, reduced == "1")))
    else:
        main()
