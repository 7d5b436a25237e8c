"""The Open Inference Protocol wire codec (dlops/api/v2/codec.py), in-process: no server, no model.

Bodies are written the way tritonclient writes them (its own serialisers where it has them), so
that what the codec reads is what a real client sends.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from dlops.api.v2.codec import (
    BYTES,
    NUMERIC_DATATYPES,
    InferenceRequest,
    OutputTensor,
    RequestedOutput,
    classification_entry,
    decode_request,
    encode_bytes_elements,
    encode_response,
    flat_strings,
    json_bytes,
)
from dlops.pipeline.errors import ClientError

NUMPY_OF = {name: dtype.newbyteorder("=") for name, dtype in NUMERIC_DATATYPES.items()}


def json_request(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def binary_request(
    tensors: list[tuple[str, str, list[int], bytes]], **extra: Any
) -> tuple[bytes, str]:
    """A body with binary tensor data, and its Inference-Header-Content-Length."""
    inputs = [
        {
            "name": name,
            "datatype": datatype,
            "shape": shape,
            "parameters": {"binary_data_size": len(raw)},
        }
        for name, datatype, shape, raw in tensors
    ]
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + b"".join(raw for *_, raw in tensors), str(len(header))


def decode(body: bytes, header_length: str | None = None) -> InferenceRequest:
    return decode_request(body, header_length)


def refused(body: bytes, header_length: str | None = None) -> str:
    with pytest.raises(ClientError) as raised:
        decode_request(body, header_length).inputs[0].array()
    assert raised.value.error_code == 400
    return raised.value.message


def refused_elements(body: bytes, header_length: str | None = None) -> str:
    with pytest.raises(ClientError) as raised:
        decode_request(body, header_length).inputs[0].elements()
    return raised.value.message


def sample(datatype: str) -> np.ndarray:
    """A [2, 3] array of the datatype, with values at both ends of its range."""
    dtype = NUMPY_OF[datatype]
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, 0, 1], [2, info.max - 1, info.max]], dtype=dtype)
    info = np.finfo(dtype)
    return np.array([[-float(info.max), -1.5, 0.0], [0.25, 1e-3, float(info.max)]], dtype=dtype)


# -- numeric tensors --------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(NUMERIC_DATATYPES))
def test_every_numeric_datatype_as_binary_data(datatype: str) -> None:
    values = sample(datatype)
    body, length = binary_request([("x", datatype, [2, 3], values.tobytes())])
    (tensor,) = decode(body, length).inputs
    assert (tensor.name, tensor.datatype, tensor.shape, tensor.count) == ("x", datatype, [2, 3], 6)
    array = tensor.array()
    assert array.dtype == values.dtype
    assert array.shape == (2, 3)
    np.testing.assert_array_equal(array, values)


@pytest.mark.parametrize("datatype", list(NUMERIC_DATATYPES))
@pytest.mark.parametrize("nested", [True, False])
def test_every_numeric_datatype_as_json(datatype: str, nested: bool) -> None:
    values = sample(datatype)
    data = values.tolist() if nested else values.ravel().tolist()
    body = json_request({"name": "x", "datatype": datatype, "shape": [2, 3], "data": data})
    array = decode(body).inputs[0].array()
    assert array.dtype == values.dtype
    np.testing.assert_array_equal(array, values)


def test_json_whole_numbers_are_valid_floats() -> None:
    body = json_request({"name": "x", "datatype": "FP16", "shape": [3], "data": [0, 1, 2.5]})
    array = decode(body).inputs[0].array()
    assert array.dtype == np.float16
    assert array.tolist() == [0.0, 1.0, 2.5]


def test_a_scalar_and_an_empty_tensor() -> None:
    scalar = json_request({"name": "x", "datatype": "INT32", "shape": [], "data": [7]})
    assert decode(scalar).inputs[0].array().tolist() == 7
    empty = json_request({"name": "x", "datatype": "FP32", "shape": [0, 3], "data": []})
    assert decode(empty).inputs[0].array().shape == (0, 3)


@pytest.mark.parametrize(
    ("datatype", "data", "fragment"),
    [
        ("UINT8", [0, 256], "UINT8 values must be from 0 to 255; found 0 to 256"),
        ("UINT8", [-1, 3], "UINT8 values must be from 0 to 255; found -1 to 3"),
        ("INT8", [-129, 0], "INT8 values must be from -128 to 127; found -129 to 0"),
        ("UINT64", [-1, 0], "UINT64 values must be from 0 to 18446744073709551615"),
        ("UINT8", [0.5, 1], "of 2 whole numbers from 0 to 255; it holds decimal numbers"),
        ("UINT8", ["a", "b"], "it holds strings"),
        ("FP32", ["a", "b"], "of 2 numbers; it holds strings"),
        ("FP32", [[1.0], [2.0, 3.0]], "it holds mixed values, or rows of unequal length"),
        ("FP32", [1.0, None], "it holds mixed values"),
        ("INT64", [2**70, 0], "INT64 values must be from -9223372036854775808 to"),
        ("UINT8", [[1], [2, 3]], "it holds mixed values, or rows of unequal length"),
        ("UINT64", [1.5, 2**63], "it holds decimal numbers"),
        ("BOOL", [1, 0], "of 2 true or false values; it holds whole numbers"),
        ("FP32", [1.0, 2.0, 3.0], "'data' holds 3 numbers; FP32 [2] needs 2"),
        ("BOOL", [True], "'data' holds 1 values; BOOL [2] needs 2"),
        ("UINT8", [], "'data' holds 0 numbers; UINT8 [2] needs 2"),
        ("FP16", [1.0, 70000.0], "FP16 values must be within ±65504; found 1.0 to 70000.0"),
        ("FP32", [0.0, 1e39], "FP32 values must be within ±3.40282e+38"),
        ("FP32", {"a": 1}, "'data' must be a list (flat, or nested row-major) of 2 numbers"),
    ],
)
def test_json_values_are_checked(datatype: str, data: Any, fragment: str) -> None:
    body = json_request({"name": "x", "datatype": datatype, "shape": [2], "data": data})
    message = refused(body)
    assert message.startswith("input 'x'")
    assert fragment in message


def test_json_non_finite_floats_pass_the_codec() -> None:
    """JSON has no NaN, Python's decoder does: the codec reads them, the model's adapter decides."""
    body = b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [NaN, 1.0]}]}'
    array = decode(body).inputs[0].array()
    assert np.isnan(array[0]) and array[1] == 1.0


def test_binary_numeric_data_size_and_bools_are_checked() -> None:
    body, length = binary_request([("x", "FP32", [2, 3], bytes(20))])
    assert refused(body, length) == "input 'x' has 20 bytes of binary data; FP32 [2, 3] needs 24"
    body, length = binary_request([("x", "BOOL", [2], b"\x01\x02")])
    assert "BOOL binary data is one byte per element, 0 or 1" in refused(body, length)


# -- BYTES tensors ----------------------------------------------------------------------------

ELEMENTS = [b"\x89PNG\r\n\x1a\n", b"", b"\x00\xffbytes", "é".encode()]


def test_bytes_binary_framing_as_tritonclient_writes_it() -> None:
    raw = serialize_byte_tensor(np.array(ELEMENTS, dtype=np.object_)).item()
    assert raw == encode_bytes_elements(ELEMENTS)
    body, length = binary_request([("image_file", BYTES, [4], raw)])
    tensor = decode(body, length).inputs[0]
    assert tensor.elements() == ELEMENTS
    assert not tensor.is_text


def test_bytes_framing_errors() -> None:
    raw = encode_bytes_elements([b"abc", b"de"])
    body, length = binary_request([("f", BYTES, [2], raw[:-1])])
    assert refused_elements(body, length) == (
        "input 'f': element 1 declares 2 bytes but 1 remain; each BYTES element is a 4-byte "
        "little-endian length followed by that many bytes"
    )
    for shape, data in (([3], raw), ([1], raw), ([2], raw + b"\x00\x00")):
        body, length = binary_request([("f", BYTES, shape, data)])
        assert f"do not hold exactly {shape[0]}, each a 4-byte" in refused_elements(body, length)


def test_bytes_as_json_strings_nested_and_base64() -> None:
    plain = {"name": "f", "datatype": BYTES, "shape": [2, 2], "data": [["a", "b"], ["c", "é"]]}
    tensor = decode(json_request(plain)).inputs[0]
    assert tensor.elements() == [b"a", b"b", b"c", "é".encode()]
    assert tensor.is_text
    encoded = [base64.b64encode(item).decode() for item in ELEMENTS]
    flagged = {
        "name": "f",
        "datatype": BYTES,
        "shape": [4],
        "data": encoded,
        "parameters": {"content_type": "base64"},
    }
    tensor = decode(json_request(flagged)).inputs[0]
    assert tensor.elements() == ELEMENTS
    assert not tensor.is_text


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"shape": [2], "data": ["a"]}, "input 'f': 'data' holds 1 strings; shape [2] needs 2"),
        (
            {"shape": [2], "data": ["a", 1]},
            "'data' must be a list (flat, or nested row-major) of 2",
        ),
        ({"shape": [1], "data": "a"}, "'data' must be a list"),
        (
            {"shape": [1], "data": ["not base64!"], "parameters": {"content_type": "base64"}},
            "input 'f': element 0 is not valid base64",
        ),
        (
            {"shape": [1], "data": ["a"], "parameters": {"content_type": "hex"}},
            "content_type 'hex' is not known",
        ),
    ],
)
def test_json_bytes_errors(tensor: dict[str, Any], fragment: str) -> None:
    body = json_request({"name": "f", "datatype": BYTES, **tensor})
    assert fragment in refused_elements(body)


def test_flat_strings_is_iterative() -> None:
    deep: Any = ["x"]
    for _ in range(5000):  # deeper than the interpreter's recursion limit
        deep = [deep]
    assert flat_strings(deep) == ["x"]
    assert flat_strings([["a"], [], ["b", ["c"]]]) == ["a", "b", "c"]
    assert flat_strings(["a", 1]) is None
    assert flat_strings("a") is None


def test_a_json_string_keeps_lone_surrogates_as_bytes() -> None:
    body = b'{"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}'
    assert decode(body).inputs[0].elements() == ["\ud800".encode("utf-8", "surrogatepass")]


# -- the request ------------------------------------------------------------------------------


def test_several_inputs_share_the_binary_section_in_order() -> None:
    first = np.arange(6, dtype=np.float32).reshape(2, 3)
    second = encode_bytes_elements([b"one", b"two"])
    body, length = binary_request(
        [("a", "FP32", [2, 3], first.tobytes()), ("b", BYTES, [2], second)], id="r-7"
    )
    request = decode(body, length)
    assert request.id == "r-7"
    a, b = request.inputs
    np.testing.assert_array_equal(a.array(), first)
    assert b.elements() == [b"one", b"two"]
    assert request.outputs is None
    assert request.binary_output is False


def test_json_and_binary_inputs_mix() -> None:
    raw = np.array([1, 2], dtype=np.uint8).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "j", "datatype": "INT16", "shape": [1], "data": [-3]},
                {
                    "name": "b",
                    "datatype": "UINT8",
                    "shape": [2],
                    "parameters": {"binary_data_size": 2},
                },
            ]
        }
    ).encode()
    j, b = decode(header + raw, str(len(header))).inputs
    assert j.array().tolist() == [-3]
    assert b.array().tolist() == [1, 2]


@pytest.mark.parametrize(
    ("body", "header_length", "fragment"),
    [
        (b"{not json", None, "the inference request is not valid JSON"),
        (b"[]", None, "the inference request is a JSON list"),
        (b"[" * 100_000 + b"]" * 100_000, None, "maximum recursion depth exceeded"),
        (b"{}", None, "the request has no 'inputs' list"),
        (b'{"inputs": [3]}', None, "an input must be a JSON object, got 3"),
        (b'{"inputs": [{"name": ["f"]}]}', None, "there is no input ['f']"),
        (
            b'{"inputs": [{"name": "f", "datatype": "BF16", "shape": [1], "data": [1]}]}',
            None,
            "input 'f' has datatype 'BF16'; expected one of BOOL, UINT8",
        ),
        (
            b'{"inputs": [{"name": "f", "datatype": "FP32", "shape": [-1], "data": [1]}]}',
            None,
            "input 'f' has shape [-1]; expected a list of whole numbers",
        ),
        (
            b'{"inputs": [{"name": "f", "datatype": "FP32", "shape": [true], "data": [1]}]}',
            None,
            "input 'f' has shape [True]",
        ),
        (
            b'{"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1]}]}',
            None,
            "input 'f' has neither 'data' nor a 'binary_data_size' parameter",
        ),
        (
            b'{"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1], "data": ["a"], '
            b'"parameters": {"binary_data_size": 1}}]}',
            None,
            "has both 'data' and a 'binary_data_size' parameter",
        ),
        (
            b'{"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1], '
            b'"parameters": {"binary_data_size": "5"}}]}',
            None,
            "binary_data_size must be a whole number of bytes, got '5'",
        ),
        (
            b'{"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1], "data": ["a"], '
            b'"parameters": {"shared_memory_region": "r"}}]}',
            None,
            "input 'f' refers to shared memory, which this server does not offer",
        ),
        (
            b'{"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1], "data": ["a"], '
            b'"parameters": []}]}',
            None,
            "input 'f': 'parameters' must be a JSON object, got []",
        ),
        (
            b'{"inputs": [{"name": "f", "datatype": "BYTES", "shape": [1], "data": ["a"]}, '
            b'{"name": "f", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}',
            None,
            "input 'f' is given twice",
        ),
        (b'{"inputs": [], "id": 5}', None, "'id' must be a string, got 5"),
        (b'{"inputs": []}', "x", "Inference-Header-Content-Length is 'x'; expected the length"),
        (b'{"inputs": []}', "0", "(1 to 14)"),
        (b'{"inputs": []}', "15", "Inference-Header-Content-Length is '15'"),
        (b'{"inputs": []}xyz', "14", "3 bytes after the JSON header belong to no input"),
        (
            b'{"inputs": [], "parameters": {"binary_data_output": "yes"}}',
            None,
            "the request: the parameter 'binary_data_output' must be true or false, got 'yes'",
        ),
    ],
)
def test_malformed_requests(body: bytes, header_length: str | None, fragment: str) -> None:
    with pytest.raises(ClientError) as raised:
        decode_request(body, header_length)
    assert raised.value.error_code == 400
    assert fragment in raised.value.message, raised.value.message


def test_binary_data_cut_short() -> None:
    raw = encode_bytes_elements([b"abc"])
    body, length = binary_request([("f", BYTES, [1], raw)])
    with pytest.raises(ClientError) as raised:
        decode_request(body[:-1], length)
    assert raised.value.message.startswith(
        "input 'f' declares binary_data_size 7, but 6 bytes of binary data follow the JSON header"
    )


def test_long_values_are_cut_short_in_messages() -> None:
    name = "n" * 500
    with pytest.raises(ClientError) as raised:
        decode_request(json_request({"name": [name]}), None)
    assert len(raised.value.message) < 200
    assert raised.value.message.endswith("...: an input's 'name' is a string")


# -- requested outputs and the classification extension --------------------------------------


def outputs_of(*outputs: Any, **parameters: Any) -> list[RequestedOutput] | None:
    extra: dict[str, Any] = {"outputs": list(outputs)}
    if parameters:
        extra["parameters"] = parameters
    return decode_request(json_request(**extra), None).outputs


def test_requested_outputs_in_order_with_their_parameters() -> None:
    assert outputs_of() is None
    assert outputs_of(
        {"name": "b"},
        {"name": "a", "parameters": {"binary_data": True, "classification": 3}},
    ) == [RequestedOutput("b", False, None), RequestedOutput("a", True, 3)]
    # binary_data_output is every output's default; an output's binary_data overrides it.
    assert outputs_of(
        {"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}, binary_data_output=True
    ) == [RequestedOutput("a", True), RequestedOutput("b", False)]


def test_tritonclient_class_count_is_the_classification_parameter() -> None:
    import tritonclient.http as triton

    requested = triton.InferRequestedOutput("proba", class_count=4)
    (output,) = outputs_of(requested._get_tensor()) or []
    assert output == RequestedOutput("proba", True, 4)


@pytest.mark.parametrize("value", [0, -1, 2.0, "3", True, None, [1]])
def test_classification_must_be_a_whole_number_of_at_least_one(value: Any) -> None:
    output = {"name": "proba", "parameters": {"classification": value}}
    if value is None:  # null: no classification asked for
        assert outputs_of(output) == [RequestedOutput("proba", False, None)]
        return
    with pytest.raises(ClientError) as raised:
        outputs_of(output)
    assert raised.value.message.startswith(
        "output 'proba': the parameter 'classification' must be a whole number of classes, at "
        "least 1, got "
    )


@pytest.mark.parametrize(
    ("outputs", "fragment"),
    [
        ({"name": "a"}, "'outputs' must be a list of {\"name\": ...} objects"),
        ([{"name": "a"}, {"name": "a"}], "output 'a' is requested twice"),
        (["a"], "there is no output None: an output is asked for as"),
        ([{"name": 3}], "there is no output 3"),
        ([{"name": "a", "parameters": {"binary_data": 1}}], "'binary_data' must be true or false"),
        (
            [{"name": "a", "parameters": {"shared_memory_region": "r"}}],
            "output 'a': the parameter 'shared_memory_region'",
        ),
    ],
)
def test_malformed_outputs(outputs: Any, fragment: str) -> None:
    with pytest.raises(ClientError) as raised:
        decode_request(json_request(outputs=outputs), None)
    assert fragment in raised.value.message


def test_classification_entries_format_the_score_as_triton_does() -> None:
    # C++ std::to_string(float) prints "%f": six decimals, rounded.
    assert classification_entry(0.98765432, 3, "three") == "0.987654:3:three"
    assert classification_entry(1.0, 0, "0") == "1.000000:0:0"
    assert classification_entry(1e-9, 12, "a:b") == "0.000000:12:a:b"
    assert classification_entry(0.5, 1, None) == "0.500000:1"


# -- the response -----------------------------------------------------------------------------


PROBABILITIES = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])


def test_json_response_keeps_the_doubles() -> None:
    body, length = encode_response(
        {"model_name": "m", "model_version": "1", "id": "r"},
        [
            OutputTensor("proba", "FP32", [2, 3], PROBABILITIES, binary=False),
            OutputTensor("label", BYTES, [2], ["c", "a"], binary=False),
        ],
    )
    assert length is None
    assert json.loads(body) == {
        "model_name": "m",
        "model_version": "1",
        "id": "r",
        "outputs": [
            {
                "name": "proba",
                "datatype": "FP32",
                "shape": [2, 3],
                "data": [0.1, 0.2, 0.7, 0.6, 0.3, 0.1],
            },
            {"name": "label", "datatype": BYTES, "shape": [2], "data": ["c", "a"]},
        ],
    }


def test_binary_response_as_tritonclient_reads_it() -> None:
    from tritonclient.http import InferResult

    entries = [["0.700000:2:c", "0.200000:1:b"], ["0.600000:0:a", "0.300000:1:b"]]
    body, length = encode_response(
        {"model_name": "m", "model_version": "1"},
        [
            OutputTensor("proba", "FP32", [2, 3], PROBABILITIES, binary=True),
            OutputTensor("label", BYTES, [2, 2], [e for row in entries for e in row], binary=True),
            OutputTensor("plain", BYTES, [2], ["c", "a"], binary=False),
        ],
    )
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert header["outputs"][2]["data"] == ["c", "a"]
    proba = np.frombuffer(body[length : length + 24], dtype="<f4").reshape(2, 3)
    np.testing.assert_array_equal(proba, PROBABILITIES.astype(np.float32))
    assert struct.unpack_from("<I", body, length + 24) == (len("0.700000:2:c"),)
    result = InferResult.from_response_body(body, header_length=length)
    np.testing.assert_array_equal(result.as_numpy("proba"), PROBABILITIES.astype(np.float32))
    assert result.as_numpy("label").tolist() == [
        [entry.encode() for entry in row] for row in entries
    ]


def test_an_output_whose_data_does_not_fit_its_shape_is_a_bug() -> None:
    with pytest.raises(ValueError, match="3 elements for shape"):
        encode_response({}, [OutputTensor("p", "FP32", [2], np.zeros(3), binary=False)])


def test_only_the_json_of_a_binary_request_counts_as_parsing() -> None:
    # The binary data after the JSON is sliced, never parsed: a large image sent as binary data
    # is no reason to take its parse off the event loop; a bad header length parses it all.
    assert json_bytes(400_000, "150") == 150
    assert json_bytes(400_000, None) == 400_000
    assert json_bytes(400_000, "x") == 400_000
    assert json_bytes(100, "900") == 100
