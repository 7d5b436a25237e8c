"""Raw model outputs to probabilities and answers, in-process."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlops.model.spec import PostprocessSpec
from dlops.pipeline.postprocess import Postprocessor, sigmoid, softmax

BINARY = PostprocessSpec("output", 1, "sigmoid", ("no 3", "3"), 0.5, 1)
FOUR = PostprocessSpec("y", 4, "softmax", ("0", "90", "180", "270"), None, 4)


def test_sigmoid_is_the_seed_apps() -> None:
    for logit in (-80.0, -3.0, 0.0, 0.7, 4.5, 1e6):
        expected = 1 / (1 + math.exp(-max(min(logit, 60.0), -60.0)))
        assert sigmoid(logit) == expected


def test_softmax_is_stable_and_sums_to_one() -> None:
    logits = np.array([[1000.0, 1001.0, 999.0], [-5.0, 0.0, 5.0]])
    probabilities = softmax(logits)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    expected = np.exp(logits[1]) / np.exp(logits[1]).sum()
    np.testing.assert_allclose(probabilities[1], expected)
    assert np.all(np.isfinite(probabilities))


def test_binary_answer_keeps_the_seed_contract() -> None:
    post = Postprocessor(BINARY)
    probabilities = post.probabilities(np.array([[2.0], [-2.0], [0.0]], dtype=np.float32))
    answers = [post.answer(row) for row in probabilities]
    assert answers[0] == {"proba": sigmoid(2.0), "label": "3"}
    assert answers[1] == {"proba": sigmoid(-2.0), "label": "no 3"}
    assert answers[2]["label"] == "no 3"  # 0.5 is not above the threshold of 0.5
    assert list(answers[0]) == ["proba", "label"]
    assert post.answer(probabilities[0], top_k=3) == answers[0]  # no ranking for binary models


def test_binary_threshold_is_the_specs() -> None:
    post = Postprocessor(PostprocessSpec("output", 1, "sigmoid", ("cat", "dog"), 0.9, 1))
    assert post.answer(post.probabilities(np.array([[1.0]]))[0])["label"] == "cat"
    assert post.answer(post.probabilities(np.array([[3.0]]))[0])["label"] == "dog"


def test_multi_class_answer_ranks_the_classes() -> None:
    post = Postprocessor(FOUR)
    (row,) = post.probabilities(np.array([[0.1, 2.0, -1.0, 1.5]]))
    answer = post.answer(row)
    assert answer["label"] == "90"
    assert answer["proba"] == pytest.approx(float(row[1]))
    assert [entry["label"] for entry in answer["top_k"]] == ["90", "270", "0", "180"]
    assert [entry["index"] for entry in answer["top_k"]] == [1, 3, 0, 2]
    assert answer["top_k"][0] == {"label": "90", "index": 1, "proba": answer["proba"]}
    assert list(answer) == ["label", "proba", "top_k"]


@pytest.mark.parametrize(("requested", "count"), [(None, 2), (1, 1), (3, 3), (0, 4), (99, 4)])
def test_top_k_default_all_and_cap(requested: int | None, count: int) -> None:
    post = Postprocessor(PostprocessSpec("y", 4, "softmax", ("a", "b", "c", "d"), None, 2))
    row = post.probabilities(np.array([[0.0, 1.0, 2.0, 3.0]]))[0]
    assert len(post.answer(row, top_k=requested)["top_k"]) == count


def test_activation_none_takes_the_graphs_probabilities() -> None:
    post = Postprocessor(PostprocessSpec("y", 3, "none", ("a", "b", "c"), None, 3))
    raw = np.array([[0.2, 0.7, 0.1], [1.0000001, 0.0, -1e-7]], dtype=np.float32)
    probabilities = post.probabilities(raw)
    np.testing.assert_allclose(probabilities[0], [0.2, 0.7, 0.1], rtol=1e-6)
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0


def test_ties_keep_the_lower_index_first() -> None:
    post = Postprocessor(PostprocessSpec("y", 3, "none", ("a", "b", "c"), None, 3))
    answer = post.answer(np.array([0.4, 0.2, 0.4]))
    assert [entry["index"] for entry in answer["top_k"]] == [0, 2, 1]


def test_output_shapes_are_flattened_per_image() -> None:
    post = Postprocessor(FOUR)
    probabilities = post.probabilities(np.zeros((2, 1, 4, 1), dtype=np.float32))
    assert probabilities.shape == (2, 4)
    np.testing.assert_allclose(probabilities, 0.25)


def test_binary_as_two_classes() -> None:
    post = Postprocessor(BINARY)
    np.testing.assert_allclose(post.classes_as_binary(np.array([0.8])), [0.2, 0.8])
