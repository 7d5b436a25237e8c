"""bench/profile.py's sorting of py-spy samples into stages: pure functions, in-process."""

from __future__ import annotations

import pytest

from bench.profile import OTHER, stage_of, stage_shares, timer_means_us

SERVE = "Server.run (uvicorn/server.py:86);RequestResponseCycle.run_asgi (uvicorn/x.py:1)"
ROUTE = SERVE + ";DirectRoute.__call__ (dlops/http/direct_route.py:115)"


def test_a_sample_goes_to_its_innermost_listed_stage() -> None:
    infer = ROUTE + ";Core._infer (dlops/pipeline/core.py:1);Session.run (onnxruntime/x.py:406)"
    assert stage_of(infer.split(";")) == "onnxruntime run"
    assert stage_of(
        (ROUTE + ";Core._classify_files (dlops/pipeline/core.py:2)").split(";")
    ).startswith("dlops' core")
    assert stage_of(ROUTE.split(";")).startswith("the app's ASGI code")
    assert stage_of(["Runner.run (asyncio/runners.py:118)"]) == OTHER


def test_shares_count_the_samples_of_each_line() -> None:
    raw = "\n".join(
        [
            f"{ROUTE};Session.run (onnxruntime/x.py:406) 3",
            f"{ROUTE};load_reduced (dlops/pipeline/decode.py:201) 1",
            "Runner.run (asyncio/runners.py:118) 4",
        ]
    )
    shares = stage_shares(raw)
    assert shares["onnxruntime run"] == pytest.approx(0.375)
    assert shares["decode (Pillow)"] == pytest.approx(0.125)
    assert shares[OTHER] == pytest.approx(0.5)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert stage_shares("") == {}


def test_timer_means_are_the_growth_between_two_scrapes() -> None:
    before = {"decode": (1.0, 1000.0), "infer": (2.0, 1000.0)}
    after = {"decode": (1.5, 2000.0), "infer": (2.0, 1000.0), "preprocess": (0.1, 100.0)}
    assert timer_means_us(before, after) == pytest.approx({"decode": 500.0, "preprocess": 1000.0})


def test_the_lean_floors_own_code_is_its_asgi_stage() -> None:
    app = SERVE + ";_floor.<locals>.app (bench/floors.py:160)"
    assert stage_of(app.split(";")).startswith("the app's ASGI code")
    answer = app + ";<lambda> (bench/floors.py:172);DigitModel.answer (bench/floors.py:140)"
    assert stage_of(answer.split(";")).startswith("postprocessing")
