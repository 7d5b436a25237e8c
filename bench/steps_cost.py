"""What the preprocessing costs per image, now and at a baseline commit, side by side in one run.

    python -m bench.steps_cost [--baseline REF] [--rounds 5]

Each subject is dlops' own decode (reduced as the service does it) and preprocessing of one
upload, in a fresh process per round, on the paths the benchmarks serve: the digit model (a
handwritten digit, the MNIST step) and the orientation model (a 1240x1754 scanned page and a
photographed one: OpenCV's resampling as imported by name, and Pillow's, which may decode
reduced). The baseline's files come from `git archive` (nothing of this checkout touched);
rounds alternate between the two trees; medians and ratios go to bench/results/steps-cost.*.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.load import DIGIT
from bench.rounds import rotated
from bench.servers import ROOT, baseline_tree
from bench.study import RESULTS, write_results

# Run inside each tree: only APIs both the baseline and this checkout have.
TIMER = """
import json, sys, timeit
from pathlib import Path
try:
    from dlops.pipeline.decode import decode_image
    from dlops.pipeline.preprocess import Preprocessor
    from dlops.model.resolve import Overrides, resolve_spec
except ImportError:  # a baseline from before the package was laid out by concern
    from dlops.decode import decode_image
    from dlops.preprocess import Preprocessor
    from dlops.resolve import Overrides, resolve_spec

cases = json.loads(sys.argv[1])
figures = {}
for name, (model, image, flags) in cases.items():
    preprocessor = Preprocessor(resolve_spec(Path(model), Overrides(**flags)).spec)
    data = Path(image).read_bytes()
    run = lambda: preprocessor(decode_image(data, reduction=preprocessor.reduction))
    run()
    timer = timeit.Timer(run)
    number, _ = timer.autorange()
    figures[name] = min(timer.repeat(5, number)) / number * 1e6
print(json.dumps(figures))
"""


def cases(scratch: Path) -> dict[str, tuple[str, str, dict[str, str]]]:
    """(model, image, import flags) by name: the inputs every tree is timed on."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import orientation_model_path
    from tests.documents import document

    scan, photo = scratch / "scan.jpg", scratch / "photo.jpg"
    scan.write_bytes(document(1, 90, size=(1240, 1754)))
    photo.write_bytes(document(2, 0, photo=True, size=(1240, 1754)))
    orientation = str(orientation_model_path())
    pillow = {"resampling": "pillow"}
    return {
        "digit (MNIST step)": (str(ROOT / "models" / "binary_classifier_3.onnx"), str(DIGIT), {}),
        "orientation, scanned page": (orientation, str(scan), {}),
        "orientation, photographed page": (orientation, str(photo), {}),
        "orientation --resampling pillow, scanned page": (orientation, str(scan), pillow),
        "orientation --resampling pillow, photographed page": (orientation, str(photo), pillow),
    }


def time_tree(tree: Path, inputs: dict[str, tuple[str, str, dict[str, str]]]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", TIMER, json.dumps(inputs)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"timing in {tree} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--baseline", help="a commit to time beside this checkout")
    cli.add_argument("--rounds", type=int, default=5)
    args = cli.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        trees = {"now": ROOT}
        commit = None
        if args.baseline:
            trees["baseline"], commit = baseline_tree(args.baseline, scratch / "baseline")
        inputs = cases(scratch)
        samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        for round_index in range(args.rounds):
            for name in rotated(list(trees), round_index):
                for case, micros in time_tree(trees[name], inputs).items():
                    samples[name].setdefault(case, []).append(micros)
    medians = {
        name: {case: statistics.median(values) for case, values in by_case.items()}
        for name, by_case in samples.items()
    }
    data = {"baseline": args.baseline, "commit": commit, "rounds": args.rounds, "medians": medians}
    lines = [
        "# Preprocessing cost per image: decode (reduced) + steps",
        "",
        f"`python -m bench.steps_cost{' --baseline ' + args.baseline if args.baseline else ''}`,"
        f" {args.rounds} alternating rounds, one fresh process per tree and round, best of 5 "
        "timeit repeats each; medians of the rounds in µs.",
        "",
        "| path | now | " + ("baseline | now / baseline |" if commit else ""),
        "|---|---:|" + ("---:|---:|" if commit else ""),
    ]
    for case, now in medians["now"].items():
        row = f"| {case} | {now:,.0f} |"
        if commit:
            before = medians["baseline"][case]
            row += f" {before:,.0f} | {now / before:.2f}× |"
        lines.append(row)
    if commit:
        lines += ["", f"Baseline: `{args.baseline}` (commit {commit[:12]})."]
    write_results(RESULTS, "steps-cost", data, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
