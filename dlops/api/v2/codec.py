"""The Open Inference Protocol's (KServe V2 REST) wire format, for any model; no web framework.

:func:`decode_request` splits a body into its JSON header and the binary tensor data after it
(``Inference-Header-Content-Length``), and reads the input tensors and the outputs asked for
(``binary_data``, and the classification extension's ``"classification": k``).
:func:`encode_response` writes output tensors back, as JSON or as binary tensor data.

An input's data is converted only when asked for (:meth:`InputTensor.array`,
:meth:`InputTensor.elements`): the caller first checks names and shapes against its model, and
refuses an oversized batch, before megabytes of JSON numbers are converted. Every malformed
request raises :class:`ClientError` saying what was wrong and what is expected.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlops.pipeline.errors import ClientError

HEADER_LENGTH = "inference-header-content-length"
BYTES = "BYTES"
# Fixed-size datatypes as numpy reads them from binary tensor data: little-endian, BOOL one byte.
NUMERIC_DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*NUMERIC_DATATYPES, BYTES)
# MLServer's convention for binary content in a JSON BYTES tensor: base64 strings, flagged so.
BASE64 = "base64"
# Triton's classification extension: on a requested output, the top k classes as strings.
CLASSIFICATION = "classification"
# The binary tensor data extension frames each BYTES element as a uint32 length, little-endian.
BYTES_LENGTH = struct.Struct("<I")
# The most of a client's value an error message repeats.
SHOWN_CHARACTERS = 80
REQUEST_SHAPE = (
    '{"inputs": [{"name": ..., "datatype": ..., "shape": [...], "data": [...]}]}, followed by '
    "the binary tensor data when the Inference-Header-Content-Length header gives the JSON's length"
)
# What numpy made of a JSON 'data' list, for the error that says it is the wrong kind.
JSON_KINDS = {
    "b": "booleans",
    "i": "whole numbers",
    "u": "whole numbers",
    "f": "decimal numbers",
    "U": "strings",
    "O": "mixed values, or rows of unequal length",
}


def shown(value: Any) -> str:
    """A client's value quoted in an error message, cut short: messages are logged too."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 3] + "..."


def is_count(value: Any) -> bool:
    """A JSON whole number >= 0 (JSON's true and false are Python ints, and are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parameters_of(item: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = item.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ClientError(f"{where}: 'parameters' must be a JSON object, got {shown(parameters)}")
    return parameters


def boolean_parameter(parameters: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise ClientError(
            f"{where}: the parameter {key!r} must be true or false, got {shown(value)}"
        )
    return value


# -- the body --------------------------------------------------------------------------------


class BinarySection:
    """The bytes after the JSON header, handed to tensors in the order the JSON lists them."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int, tensor: str) -> bytes:
        left = len(self.data) - self.offset
        if size > left:
            raise ClientError(
                f"input {tensor!r} declares binary_data_size {size}, but {left} bytes of binary "
                "data follow the JSON header; send each binary input's bytes after the JSON, in "
                "the order of 'inputs', and the JSON's length in Inference-Header-Content-Length"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def check_consumed(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise ClientError(
                f"{left} bytes after the JSON header belong to no input; the inputs' "
                "binary_data_size parameters must add up to the body's length minus "
                "Inference-Header-Content-Length"
            )


def json_bytes(body_length: int, header_length: str | None) -> int:
    """How many of a body's bytes are JSON to parse: the header's, when the binary tensor
    extension gives its length (the binary data after it is sliced, never parsed), else all."""
    if header_length is not None and header_length.strip().isdigit():
        return min(int(header_length), body_length)
    return body_length


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], BinarySection]:
    """The JSON inference request and the binary tensor data after it (binary data extension)."""
    if header_length is None:
        header, binary = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            size = 0
        if not 0 < size <= len(body):
            raise ClientError(
                f"Inference-Header-Content-Length is {shown(header_length)}; expected the length "
                f"in bytes of the JSON object at the start of the body (1 to {len(body)})"
            )
        header, binary = body[:size], body[size:]
    try:
        request = json.loads(header)
    # Invalid JSON, bytes that are not UTF-8 text, or arrays nested thousands deep.
    except (ValueError, RecursionError) as error:
        raise ClientError(
            f"the inference request is not valid JSON ({error}); expected {REQUEST_SHAPE}"
        ) from None
    if not isinstance(request, dict):
        raise ClientError(
            f"the inference request is a JSON {type(request).__name__}; expected {REQUEST_SHAPE}"
        )
    return request, BinarySection(binary)


# -- input tensors ---------------------------------------------------------------------------


def split_bytes_elements(raw: bytes, count: int, name: str) -> list[bytes]:
    """BYTES binary tensor data: each element is a uint32 length (little-endian), then its bytes."""
    elements: list[bytes] = []
    offset = 0
    while offset + BYTES_LENGTH.size <= len(raw) and len(elements) < count:
        (length,) = BYTES_LENGTH.unpack_from(raw, offset)
        offset += BYTES_LENGTH.size
        if offset + length > len(raw):
            raise ClientError(
                f"input {name!r}: element {len(elements)} declares {length} bytes but "
                f"{len(raw) - offset} remain; each BYTES element is a 4-byte little-endian length "
                "followed by that many bytes"
            )
        elements.append(raw[offset : offset + length])
        offset += length
    if len(elements) != count or offset != len(raw):
        raise ClientError(
            f"input {name!r} has {count} elements by its shape, but its {len(raw)} bytes of "
            f"binary data do not hold exactly {count}, each a 4-byte little-endian length "
            "followed by that many bytes"
        )
    return elements


def encode_bytes_elements(elements: Sequence[bytes]) -> bytes:
    """BYTES elements as binary tensor data: each a uint32 length (little-endian), then itself."""
    return b"".join(BYTES_LENGTH.pack(len(element)) + element for element in elements)


def flat_strings(data: Any) -> list[str] | None:
    """A JSON list of strings, flat or nested row-major, flattened; None if it is anything else.

    Iterative, not recursive: the JSON decoder allows nesting deeper than a recursion would.
    """
    if not isinstance(data, list):
        return None
    strings: list[str] = []
    stack = [iter(data)]
    while stack:
        item = next(stack[-1], stack)  # the stack itself marks the end of a list
        if item is stack:
            stack.pop()
        elif isinstance(item, str):
            strings.append(item)
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            return None
    return strings


def _python_ints(data: list[Any]) -> np.ndarray | None:
    """JSON whole numbers of any size as an object array of Python ints; None if not all are."""
    try:
        values = np.array(data, dtype=object)
    except ValueError:  # ragged nesting
        return None
    ints = all(type(value) is int for value in values.flat)
    return values if ints else None


@dataclass(frozen=True)
class InputTensor:
    """One input of a request, its header checked; the data is read by ``array`` or ``elements``."""

    name: str
    datatype: str  # one of DATATYPES
    shape: list[int]
    parameters: dict[str, Any] = field(repr=False)
    raw: bytes | None = field(repr=False)  # binary tensor data; None when 'data' is in the JSON
    data: Any = field(repr=False, default=None)  # the JSON 'data'

    @property
    def count(self) -> int:
        """The number of elements its shape declares."""
        return math.prod(self.shape)

    @property
    def is_text(self) -> bool:
        """BYTES sent as JSON strings without base64, each taken as its UTF-8 bytes."""
        return self.datatype == BYTES and self.raw is None and "content_type" not in self.parameters

    def array(self) -> np.ndarray:
        """A numeric tensor's values in its datatype and shape (read-only if binary data)."""
        dtype = NUMERIC_DATATYPES.get(self.datatype)
        if dtype is None:
            raise ClientError(f"input {self.name!r} is {self.datatype}, not a numeric tensor")
        if self.raw is None:
            return self._json_array(dtype)
        needed = self.count * dtype.itemsize
        if len(self.raw) != needed:
            raise ClientError(
                f"input {self.name!r} has {len(self.raw)} bytes of binary data; "
                f"{self.datatype} {self.shape} needs {needed}"
            )
        if self.datatype == "BOOL" and self.raw.translate(None, b"\x00\x01"):
            raise ClientError(
                f"input {self.name!r}: BOOL binary data is one byte per element, 0 or 1"
            )
        return np.frombuffer(self.raw, dtype=dtype.newbyteorder("=")).reshape(self.shape)

    def _json_array(self, dtype: np.dtype[Any]) -> np.ndarray:
        name, datatype, needed = self.name, self.datatype, self.count
        integer = np.iinfo(dtype) if dtype.kind in "iu" else None
        if datatype == "BOOL":
            kinds, unit, wanted = "b", "values", "true or false values"
        elif integer is not None:
            kinds, unit = "iu", "numbers"
            wanted = f"whole numbers from {integer.min} to {integer.max}"
        else:
            kinds, unit, wanted = "iuf", "numbers", "numbers"
        expected = f"'data' must be a list (flat, or nested row-major) of {needed} {wanted}"
        if not isinstance(self.data, list):
            raise ClientError(
                f"input {name!r}: {expected}; it is a JSON {type(self.data).__name__}"
            )
        try:
            values = np.array(self.data)
        except (ValueError, TypeError, OverflowError):  # ragged nesting
            values = np.array(None)
        exact = integer is not None and values.dtype.kind in "fO" and values.size > 0
        if exact:
            # numpy reads whole numbers beyond int64 as doubles (rounded) or objects: kept as
            # Python ints, they get the range check below like any other.
            ints = _python_ints(self.data)
            exact = ints is not None
            values = ints if ints is not None else values
        # numpy makes [] a float array: what is wrong with an empty list is its length.
        if values.dtype.kind not in kinds and values.size and not exact:
            found = JSON_KINDS.get(values.dtype.kind, "something else")
            raise ClientError(f"input {name!r}: {expected}; it holds {found}")
        if values.size != needed:
            raise ClientError(
                f"input {name!r}: 'data' holds {values.size} {unit}; "
                f"{datatype} {self.shape} needs {needed}"
            )
        if values.size and integer is not None:
            low, high = int(values.min()), int(values.max())
            if low < integer.min or high > integer.max:
                raise ClientError(
                    f"input {name!r}: {datatype} values must be from {integer.min} to "
                    f"{integer.max}; found {low} to {high}"
                )
        if values.size and dtype.kind == "f":
            # JSON numbers are doubles: one beyond the datatype's range would become infinite.
            finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            largest = float(np.finfo(dtype).max)
            if finite.size and float(np.abs(finite).max()) > largest:
                raise ClientError(
                    f"input {name!r}: {datatype} values must be within ±{largest:g}; found "
                    f"{finite.min()} to {finite.max()}"
                )
        return values.astype(dtype.newbyteorder("=")).reshape(self.shape)

    def elements(self) -> list[bytes]:
        """A BYTES tensor's elements, row-major: binary data, JSON strings or base64 strings."""
        name, count = self.name, self.count
        if self.datatype != BYTES:
            raise ClientError(f"input {name!r} is {self.datatype}, not BYTES")
        if self.raw is not None:
            return split_bytes_elements(self.raw, count, name)
        strings = flat_strings(self.data)
        if strings is None:
            raise ClientError(
                f"input {name!r}: 'data' must be a list (flat, or nested row-major) of {count} "
                "strings, one per element"
            )
        if len(strings) != count:
            raise ClientError(
                f"input {name!r}: 'data' holds {len(strings)} strings; shape {self.shape} needs "
                f"{count}"
            )
        encoding = self.parameters.get("content_type")
        if encoding is None:
            # surrogatepass: a JSON "\ud800" escape still becomes bytes (which the model refuses).
            return [item.encode("utf-8", "surrogatepass") for item in strings]
        if encoding != BASE64:
            raise ClientError(
                f"input {name!r}: content_type {shown(encoding)} is not known; use "
                '"base64" for base64-encoded bytes, or leave it out for plain strings'
            )
        elements: list[bytes] = []
        for index, item in enumerate(strings):
            try:
                elements.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError) as error:
                raise ClientError(
                    f"input {name!r}: element {index} is not valid base64 ({error}); "
                    'content_type "base64" expects each string to be whole bytes (a whole file), '
                    "base64-encoded"
                ) from None
        return elements


def _input_tensor(item: Any, binary: BinarySection) -> InputTensor:
    if not isinstance(item, dict):
        raise ClientError(
            f"an input must be a JSON object, got {shown(item)}; expected {REQUEST_SHAPE}"
        )
    name = item.get("name")
    if not isinstance(name, str):
        raise ClientError(f"there is no input {shown(name)}: an input's 'name' is a string")
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise ClientError(
            f"input {name!r} has datatype {shown(datatype)}; expected one of {', '.join(DATATYPES)}"
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(is_count(dim) for dim in shape):
        raise ClientError(
            f"input {name!r} has shape {shown(shape)}; expected a list of whole numbers, its "
            "dimensions (e.g. [1, 3, 224, 224])"
        )
    parameters = parameters_of(item, f"input {name!r}")
    if "shared_memory_region" in parameters:
        raise ClientError(
            f"input {name!r} refers to shared memory, which this server does not offer; send the "
            "data in the request (JSON 'data', or binary tensor data)"
        )
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise ClientError(
                f"input {name!r} has neither 'data' nor a 'binary_data_size' parameter; "
                f"expected {REQUEST_SHAPE}"
            )
        return InputTensor(name, datatype, shape, parameters, None, item["data"])
    if "data" in item:
        raise ClientError(
            f"input {name!r} has both 'data' and a 'binary_data_size' parameter; send its data "
            "one way only"
        )
    if not is_count(size):
        raise ClientError(
            f"input {name!r}: binary_data_size must be a whole number of bytes, got {shown(size)}"
        )
    return InputTensor(name, datatype, shape, parameters, binary.take(size, name))


# -- requested outputs -----------------------------------------------------------------------


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool  # as binary tensor data (binary_data), else JSON
    classification: int | None = None  # the classification extension: the top k classes


def _classification(parameters: dict[str, Any], where: str) -> int | None:
    value = parameters.get(CLASSIFICATION)
    if value is None:
        return None
    if not is_count(value) or value < 1:
        raise ClientError(
            f"{where}: the parameter {CLASSIFICATION!r} must be a whole number of classes, at "
            f"least 1, got {shown(value)}"
        )
    return value


def _requested_outputs(outputs: Any, binary_default: bool) -> list[RequestedOutput] | None:
    if outputs is None or outputs == []:
        return None
    if not isinstance(outputs, list):
        raise ClientError(
            f"'outputs' must be a list of {{\"name\": ...}} objects, got {shown(outputs)}"
        )
    chosen: list[RequestedOutput] = []
    for output in outputs:
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str):
            raise ClientError(
                f"there is no output {shown(name)}: an output is asked for as "
                '{"name": "...", "parameters": {...}}'
            )
        where = f"output {name!r}"
        if any(known.name == name for known in chosen):
            raise ClientError(f"{where} is requested twice")
        parameters = parameters_of(output, where)
        if "shared_memory_region" in parameters:
            raise ClientError(
                f"{where}: the parameter 'shared_memory_region' (an extension this server does "
                "not offer) is not supported; request the output by name, with binary_data true "
                "or false"
            )
        binary = boolean_parameter(parameters, "binary_data", binary_default, where)
        chosen.append(RequestedOutput(name, binary, _classification(parameters, where)))
    return chosen


# -- the request -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InferenceRequest:
    id: str | None
    inputs: list[InputTensor]
    # The outputs asked for by name, in order; None when the client named none (it gets all).
    outputs: list[RequestedOutput] | None
    binary_output: bool  # binary_data_output: the default of every output's binary_data


def decode_request(body: bytes, header_length: str | None) -> InferenceRequest:
    """A request body (and its Inference-Header-Content-Length header, if any), checked."""
    request, binary = split_body(body, header_length)
    inputs = request.get("inputs")
    if not isinstance(inputs, list):
        raise ClientError(f"the request has no 'inputs' list; expected {REQUEST_SHAPE}")
    tensors: list[InputTensor] = []
    for item in inputs:
        tensor = _input_tensor(item, binary)
        if any(known.name == tensor.name for known in tensors):
            raise ClientError(f"input {tensor.name!r} is given twice; send each input once")
        tensors.append(tensor)
    binary.check_consumed()
    binary_output = boolean_parameter(
        parameters_of(request, "the request"), "binary_data_output", False, "the request"
    )
    outputs = _requested_outputs(request.get("outputs"), binary_output)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ClientError(f"'id' must be a string, got {shown(request_id)}")
    return InferenceRequest(request_id, tensors, outputs, binary_output)


# -- the response ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str  # one of DATATYPES
    shape: list[int]
    # Numbers (JSON keeps their values, e.g. doubles; binary data casts them to the datatype)
    # or, for BYTES, strings; either row-major in any nesting numpy flattens.
    data: np.ndarray | Sequence[str] = field(repr=False)
    binary: bool  # as binary tensor data, else JSON


def classification_entry(score: float, index: int, label: str | None) -> str:
    """One class of the classification extension, as Triton writes it: ``score:index:label``.

    Triton formats the score with C++ ``std::to_string(float)``, i.e. ``%f``; without a label
    the entry is ``score:index``.
    """
    entry = f"{score:f}:{index}"
    return entry if label is None else f"{entry}:{label}"


def _encode_output(tensor: OutputTensor) -> tuple[dict[str, Any], bytes]:
    """The output's JSON description and, when it travels as binary data, its bytes."""
    description: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
    }
    if tensor.datatype == BYTES:
        strings = list(tensor.data)
        count = len(strings)
        data: list[Any] = strings
        raw = encode_bytes_elements([item.encode() for item in strings]) if tensor.binary else b""
    else:
        values = np.asarray(tensor.data)
        count = values.size
        data = values.ravel().tolist()
        raw = values.astype(NUMERIC_DATATYPES[tensor.datatype]).tobytes() if tensor.binary else b""
    if count != math.prod(tensor.shape):  # a caller's bug, not the client's
        raise ValueError(f"output {tensor.name!r}: {count} elements for shape {tensor.shape}")
    if tensor.binary:
        description["parameters"] = {"binary_data_size": len(raw)}
    else:
        description["data"] = data
    return description, raw


def encode_response(
    header: dict[str, Any], outputs: Sequence[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body: ``header`` (model_name, id...) with the outputs, then any binary data.

    Returns the body and, when binary tensor data follows the JSON, the JSON's length for the
    Inference-Header-Content-Length header (None for a JSON-only body).
    """
    encoded = [_encode_output(tensor) for tensor in outputs]
    payload = json.dumps({**header, "outputs": [description for description, _ in encoded]})
    body = payload.encode()
    if not any(tensor.binary for tensor in outputs):
        return body, None
    return body + b"".join(raw for _, raw in encoded), len(body)
