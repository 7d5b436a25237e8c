"""Reading the uploaded image out of a request: the one place that knows the wire formats.

Clients of the FastAPI app this service replaces send ``multipart/form-data`` with the image in
the field ``file``; curl users also send the raw bytes (``--data-binary @digit.png -H
'Content-Type: image/png'``). Both arrive here, and every way a request can be wrong becomes a
:class:`ClientError` that says what was wrong and what is expected.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml.validators import ContentType
from pydantic import Field
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from dlops import config
from dlops.http.errors import BATCH_HOW_TO_SEND, HOW_TO_SEND
from dlops.pipeline.errors import ClientError

FIELD_NAME = "file"
RAW_BODY_TYPES = ("image/", "application/octet-stream")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def header(request: Request, name: bytes) -> str | None:
    """The first value of the header ``name`` (lower case, as ASGI gives names), read from the
    scope: Starlette's ``request.headers`` decodes every header to find one."""
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ClientError(
            f"the upload is {_megabytes(int(declared))}; the limit is {_megabytes(limit)}. "
            "Send a smaller image (a digit needs only a few kilobytes).",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    chunks: list[bytes] = []
    received = 0
    more_body = True
    # From receive() itself: Request.stream()'s async generator costs more than the loop.
    while more_body:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientError("the client closed the connection before the upload ended")
        chunk = message.get("body", b"")
        more_body = message.get("more_body", False)
        received += len(chunk)
        if received > limit:
            raise ClientError(
                f"the upload exceeds the limit of {_megabytes(limit)}. "
                "Send a smaller image (a digit needs only a few kilobytes).",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def requested_top_k(value: str | None) -> int | None:
    """``?top_k=N``: how many classes a multi-class answer lists (0: all); None when absent."""
    if value is None:
        return None
    if not value.isdigit() or len(value) > 6:
        raise ClientError(
            f"top_k={value[:20]!r} is not accepted; expected a whole number of classes, e.g. "
            "?top_k=3 (0 lists every class; binary models answer without a ranking)"
        )
    return int(value)


# Fields other than `file` that a multipart body may carry (and that are ignored).
MAX_OTHER_FIELDS = 16
# A part's own headers (Content-Disposition with a long file name, Content-Type) take a few
# hundred bytes; parsing far more would cost the event loop time that grows with what is sent.
MAX_PART_HEAD_BYTES = 2 * 1024


def _malformed(reason: str, how_to_send: str) -> ClientError:
    return ClientError(f"the multipart body could not be read: {reason}. {how_to_send}")


# The head curl, browsers, requests and httpx write for a part, read without the general parser.
SIMPLE_PART_HEAD = re.compile(
    rb'Content-Disposition: form-data; name="([^"\\\r\n]*)"(; filename="[^"\\\r\n]*")?(?:\r\n|\Z)',
    re.IGNORECASE,
)
SIMPLE_CONTENT_TYPE = re.compile(
    r"multipart/form-data; ?boundary=([0-9A-Za-z'()+_,./:=?-]{1,70})", re.IGNORECASE
)


def _part_name(head: bytes) -> tuple[str, bool] | None:
    """The form field name of a part and whether it carries a filename (a file upload).

    None when the part has no Content-Disposition header with a field name.
    """
    # The head begins after its boundary line's CRLF.
    simple = SIMPLE_PART_HEAD.match(head, 2 if head.startswith(b"\r\n") else 0)
    if simple is not None:
        return simple.group(1).decode("utf-8", "replace"), simple.group(2) is not None
    return _part_name_parsed(head)


def _part_name_parsed(head: bytes) -> tuple[str, bool] | None:
    """``_part_name`` by the general parser of header parameters (any order, quoting, case)."""
    for line in head.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            _, params = parse_options_header(value)
            name = params.get(b"name")
            if name is None:
                return None
            return name.decode("utf-8", "replace"), b"filename" in params
    return None


def _boundary(content_type: str) -> bytes | None:
    simple = SIMPLE_CONTENT_TYPE.fullmatch(content_type)
    if simple is not None:
        return simple.group(1).encode()
    return _boundary_parsed(content_type)


def _boundary_parsed(content_type: str) -> bytes | None:
    _, params = parse_options_header(content_type)
    boundary: bytes | None = params.get(b"boundary")
    return boundary


def files_from_multipart(
    content_type: str, body: bytes, how_to_send: str = HOW_TO_SEND
) -> list[bytes]:
    """The contents of every file part named ``file``, in order.

    A direct split on the boundary (RFC 7578): the body is already in memory and capped, and
    bytes.split in C is an order of magnitude cheaper than a streaming parser for a small upload.
    ``how_to_send`` ends every message about a malformed body: how the route expects its images.
    """
    boundary = _boundary(content_type)
    if not boundary:
        raise _malformed("the Content-Type header has no boundary", how_to_send)
    # Every delimiter but the first is preceded by CRLF; prefixing one makes them all alike.
    sections = (b"\r\n" + body).split(b"\r\n--" + boundary)
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise _malformed("the body does not consist of parts between boundary lines", how_to_send)
    parts = sections[1:-1]
    most = config.MAX_BATCH_IMAGES + MAX_OTHER_FIELDS
    if len(parts) > most:
        raise ClientError(
            f"the multipart body has {len(parts)} parts; at most {most} are read "
            f"({config.MAX_BATCH_IMAGES} images in the field '{FIELD_NAME}')",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    files: list[bytes] = []
    other_names: list[str] = []
    for part in parts:
        head, separator, content = part.partition(b"\r\n\r\n")
        if not separator:
            raise _malformed("a part's headers are not followed by a blank line", how_to_send)
        if len(head) > MAX_PART_HEAD_BYTES:
            raise _malformed(
                f"a part's headers take {len(head):,} bytes; at most {MAX_PART_HEAD_BYTES:,} "
                "are read",
                how_to_send,
            )
        field = _part_name(head)
        if field is None:
            raise _malformed(
                "a part has no Content-Disposition header with a field name", how_to_send
            )
        name, is_file = field
        if name != FIELD_NAME:
            other_names.append(name)
        elif not is_file:
            raise ClientError(
                f"the field '{FIELD_NAME}' holds text, not a file: with curl write "
                f"-F {FIELD_NAME}=@digit.png (the @ sends the file's contents)."
            )
        else:
            files.append(content)
    if not files:
        sent = ", ".join(repr(name) for name in other_names) or "no fields"
        raise ClientError(
            f"the multipart body has no field '{FIELD_NAME}' (it has {sent}). {how_to_send}"
        )
    return files


async def _read_upload(request: Request, accept_raw: bool) -> tuple[str, bytes]:
    """The media type and the (capped) body, once the media type is known to be accepted."""
    content_type = (header(request, b"content-type") or "").split(";")[0].strip().lower()
    is_raw = content_type.startswith(RAW_BODY_TYPES)
    if content_type != "multipart/form-data" and not (accept_raw and is_raw):
        shown = (
            f"Content-Type {content_type!r}" if content_type else "a request without Content-Type"
        )
        expected = HOW_TO_SEND if accept_raw else BATCH_HOW_TO_SEND
        raise ClientError(f"{shown} is not accepted. {expected}", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
    return content_type, await read_body(request, config.MAX_BODY_BYTES)


async def image_bytes(request: Request) -> bytes:
    """One image: the multipart field ``file``, or the raw body."""
    content_type, body = await _read_upload(request, accept_raw=True)
    if content_type != "multipart/form-data":
        return body
    files = files_from_multipart(header(request, b"content-type") or "", body)
    if len(files) > 1:
        raise ClientError(
            f"the field '{FIELD_NAME}' holds {len(files)} files; /predict classifies one image "
            "per request: send several to /predict_batch instead."
        )
    return files[0]


async def batch_image_bytes(request: Request) -> list[bytes]:
    """Every image of the multipart field ``file`` (repeated), in order."""
    _, body = await _read_upload(request, accept_raw=False)
    files = files_from_multipart(header(request, b"content-type") or "", body, BATCH_HOW_TO_SEND)
    if len(files) > config.MAX_BATCH_IMAGES:
        raise ClientError(
            f"the batch has {len(files)} images; the limit is {config.MAX_BATCH_IMAGES} per "
            "request (DLOPS_MAX_BATCH_IMAGES): split it into several requests.",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    return files


class ImageUpload(bentoml.IODescriptor):
    """One image: the multipart field `file`, or the raw body with an image/* Content-Type."""

    # BentoML documents the field (OpenAPI, Swagger UI, bentoml.SyncHTTPClient) from this
    # annotation, but reading the request is ours: the image stays in memory (no temporary files),
    # the size cap applies while reading, malformed requests get 4xx answers, and a URL in the
    # field is never fetched. The API method receives the encoded image as bytes.
    file: Annotated[Path, ContentType("image/*")] = Field(
        description="The image: PNG, JPEG, GIF, BMP, WebP, TIFF, HEIC/HEIF or AVIF; a digit on any "
        "background."
    )

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> ImageUpload:
        return cls.model_construct(file=await image_bytes(request))


class ImageBatchUpload(bentoml.IODescriptor):
    """Several images: the multipart field `file`, repeated once per image."""

    # Read by batch_image_bytes, like ImageUpload; the API method receives a list of bytes.
    file: list[Annotated[Path, ContentType("image/*")]] = Field(
        description="The images, in the order the answers should come back."
    )

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> ImageBatchUpload:
        return cls.model_construct(file=await batch_image_bytes(request))
