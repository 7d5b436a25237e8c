"""bench/peers: the requests every Open Inference Protocol subject gets, the work every peer does,
how answers are checked and how the report sets dlops against its peers. In-process, no server
and no load: the peers' own servers run only under `make bench-peers`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.ceiling import Pipeline
from bench.load import parse_hey_csv
from bench.peers import run, work
from bench.servers import import_model
from dlops.api.v2.codec import decode_request

ROOT = Path(__file__).resolve().parent.parent
DIGIT = ROOT / "tests" / "fixtures" / "digits" / "test0300_digit3.png"


@pytest.fixture(scope="module")
def digit_entry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_model(tmp_path_factory.mktemp("home"))


def test_the_binary_request_is_one_dlops_v2_reads_as_the_upload() -> None:
    image = DIGIT.read_bytes()
    body, header_length = work.oip_binary_body(image)
    request = decode_request(body, str(header_length))
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("image_file", "BYTES", [1, 1])
    assert tensor.elements() == [image]
    assert [(output.name, output.binary) for output in request.outputs or []] == [
        ("proba", False),
        ("label", False),
    ]


def test_the_json_request_carries_the_same_upload() -> None:
    image = DIGIT.read_bytes()
    request = decode_request(work.oip_json_body(image), None)
    assert request.inputs[0].elements() == [image]


def test_peers_do_the_work_of_dlops_pipeline(
    digit_entry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEER_ENTRY", str(digit_entry))
    model = work.load_model()
    image = DIGIT.read_bytes()
    pipeline = Pipeline(digit_entry)
    expected = pipeline.infer(np.expand_dims(pipeline.prepare(image), 0))[0]
    assert model.answers([image])[0] == pytest.approx(expected)
    proba, label = work.tensors(model, [image, image])
    assert proba.shape == (2, 1) and proba.dtype == np.float32
    assert proba[0, 0] == pytest.approx(expected["proba"], abs=1e-6)
    assert label.tolist() == [expected["label"].encode()] * 2


def test_a_setting_that_is_missing_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEER_PORT", raising=False)
    with pytest.raises(SystemExit, match="PEER_PORT is not set"):
        work.port()


def _model(tmp_path: Path) -> run.ModelUnderTest:
    return run.ModelUnderTest(
        name="orientation",
        store_name="orientation",
        entry=tmp_path,
        image=b"",
        filename="upload.jpg",
        bodies={},
        answer={"label": "90", "proba": 0.92, "top_k": []},
        proba=[0.03, 0.92, 0.03, 0.02],
    )


def test_answers_are_checked_on_every_protocol(tmp_path: Path) -> None:
    model = _model(tmp_path)
    multipart, oip = run.Route(run.MULTIPART), run.Route(run.OIP_BINARY, run.V2)
    assert run.answer_problem(multipart, {"label": "90", "proba": 0.9201}, model) is None
    assert "the pipeline says '90'" in str(
        run.answer_problem(multipart, {"label": "0", "proba": 0.92}, model)
    )
    assert "away from" in str(run.answer_problem(multipart, {"label": "90", "proba": 0.5}, model))

    def v2(label: str, proba: list[float]) -> dict[str, Any]:
        return {
            "outputs": [
                {"name": "proba", "datatype": "FP32", "shape": [1, 4], "data": proba},
                {"name": "label", "datatype": "BYTES", "shape": [1], "data": [label]},
            ]
        }

    assert run.answer_problem(oip, v2("90", [0.03, 0.92, 0.03, 0.02]), model) is None
    assert "away from" in str(run.answer_problem(oip, v2("90", [0.5, 0.5, 0.0, 0.0]), model))
    assert "expected proba and label" in str(run.answer_problem(oip, {"outputs": []}, model))


def _run(subject: str, protocol: str, round_number: int, rps: float, p99: float) -> dict:
    return {
        "round": round_number,
        "model": "digit",
        "workers": 1,
        "subject": subject,
        "family": subject.split()[0].lower(),
        "protocol": protocol,
        "concurrency": 16,
        "rps": rps,
        "p50_ms": p99 / 2,
        "p95_ms": p99,
        "p99_ms": p99,
        "non_200": 0,
        "sent": 100,
    }


def test_each_peer_is_set_against_the_dlops_route_taking_its_requests() -> None:
    runs = []
    for round_number, scale in ((1, 1.0), (2, 0.5)):  # a slow round slows every subject
        runs += [
            _run("dlops", run.MULTIPART, round_number, 1000 * scale, 10 / scale),
            _run("dlops /v2", run.OIP_BINARY, round_number, 800 * scale, 12 / scale),
            _run("LitServe", run.MULTIPART, round_number, 500 * scale, 20 / scale),
            _run("Triton", run.OIP_BINARY, round_number, 900 * scale, 8 / scale),
        ]
    starts = [
        {"round": 1, "model": "digit", "workers": 1, "subject": "Triton", "failed": "boom"},
        {
            "round": 1,
            "model": "digit",
            "workers": 1,
            "subject": "LitServe",
            "cold_start_s": 3.0,
            "rss_mib": 300.0,
            "pss_mib": 250.0,
            "processes": 3,
            "first_start_failed": "refused",
        },
    ]
    summary = run.summarise(runs, starts)
    ratios = {r["subject"]: r for r in summary["ratios"]}
    assert ratios["LitServe"]["dlops_route"] == "dlops"
    assert ratios["LitServe"]["rps_ratio"] == pytest.approx(2.0)
    assert ratios["Triton"]["dlops_route"] == "dlops /v2"
    assert ratios["Triton"]["rps_ratio"] == pytest.approx(800 / 900)
    assert ratios["Triton"]["p99_ratio"] == pytest.approx(1.5)
    (best,) = summary["best"]
    assert (best["peer"], best["dlops_route"]) == ("Triton", "dlops /v2")
    assert best["rps_ratio"] == pytest.approx(800 / 900)
    failures = {s["subject"]: s["failures"] for s in summary["starts"]}
    assert failures == {"Triton": ["boom"], "LitServe": []}
    data = {
        "command": "python -m bench.peers.run",
        "wall_seconds": 1.0,
        "machine": json.loads((ROOT / "bench" / "results" / "latest.json").read_text())["machine"],
        "settings": {"duration": 4, "warmup": 2, "rounds": 2, "concurrencies": [16]},
        "placement": {"1": "servers on CPU 0, hey on CPU 1"},
        "models": [{"name": "digit", "filename": "upload.png", "bytes": 288}],
        "subjects": [{"name": "dlops", "note": "bentoml serve"}],
        "peer_packages": {"litserve": {"litserve": "0.2.19"}},
        "starts": starts,
        "summary": summary,
    }
    report = "\n".join(run.markdown(data))
    assert (
        "| digit | 1 | 16 | Triton | 675.0 | 12.0 | dlops /v2 | 600.0 | 18.0 | 0.89× | 1.50× |"
        in report
    )
    assert "- Triton (digit, 1 worker(s)): boom" in report
    assert "- LitServe (digit, 1 worker(s), round 1) started at the second try" in report
    assert "litserve 0.2.19" in report


def test_a_timed_hey_run_counts_the_requests_it_saw() -> None:
    rows = (
        "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset"
    )
    text = "\n".join([rows, "0.0100,0,0,0,0,0,200,0.0", "0.0200,0,0,0,0,0,500,0.0100"])
    result = parse_hey_csv(text, concurrency=1, requests=None)
    assert (result.sent, result.ok, result.non_200) == (2, 1, 1)


def test_the_peers_stay_out_of_what_the_service_ships() -> None:
    shipped = (ROOT / "requirements" / "serve.txt").read_text().lower()
    for peer in ("litserve", "ray==", "mlserver", "nvidia-pytriton", "onnxruntime-openvino"):
        assert peer not in shipped
    for peer in run.PEER_PACKAGES:
        assert (ROOT / "requirements" / "peers" / f"{peer}.txt").is_file()
