"""Reading the uploaded image out of a request: the one place that knows the wire formats.

Clients of the FastAPI app this service replaces send ``multipart/form-data`` with the image in
the field ``file``; curl users also send the raw bytes (``--data-binary @digit.png -H
'Content-Type: image/png'``). Both arrive here, and every way a request can be wrong becomes a
:class:`ClientError` that says what was wrong and what is expected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml.validators import ContentType
from pydantic import Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from dlops import config
from dlops.errors import HOW_TO_SEND, ClientError

FIELD_NAME = "file"
RAW_BODY_TYPES = ("image/", "application/octet-stream")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ClientError(
            f"the upload is {_megabytes(int(declared))}; the limit is {_megabytes(limit)}. "
            "Send a smaller image (a digit needs only a few kilobytes).",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise ClientError(
                    f"the upload exceeds the limit of {_megabytes(limit)}. "
                    "Send a smaller image (a digit needs only a few kilobytes).",
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                )
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientError("the client closed the connection before the upload ended") from None
    return b"".join(chunks)


async def _single_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def image_from_multipart(request: Request, body: bytes) -> bytes:
    parser = MultiPartParser(
        request.headers,
        _single_chunk(body),
        max_files=1,
        max_fields=32,
        max_part_size=len(body) + 1,
    )
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise ClientError(f"the multipart body could not be read: {error} {HOW_TO_SEND}") from None
    values = form.getlist(FIELD_NAME)
    if not values:
        sent = ", ".join(repr(name) for name in form) or "no fields"
        raise ClientError(
            f"the multipart body has no field '{FIELD_NAME}' (it has {sent}). {HOW_TO_SEND}"
        )
    value = values[0]
    if not isinstance(value, UploadFile):
        raise ClientError(
            f"the field '{FIELD_NAME}' holds text, not a file: with curl write "
            f"-F {FIELD_NAME}=@digit.png (the @ sends the file's contents)."
        )
    return await value.read()


async def image_bytes(request: Request) -> bytes:
    """Dispatch on the content type: multipart field ``file``, or the raw body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("multipart/form-data",) and not content_type.startswith(RAW_BODY_TYPES):
        shown = (
            f"Content-Type {content_type!r}" if content_type else "a request without Content-Type"
        )
        raise ClientError(
            f"{shown} is not accepted. {HOW_TO_SEND}", HTTPStatus.UNSUPPORTED_MEDIA_TYPE
        )
    body = await read_body(request, config.MAX_BODY_BYTES)
    if content_type == "multipart/form-data":
        return await image_from_multipart(request, body)
    return body


class ImageUpload(bentoml.IODescriptor):
    """One image: the multipart field `file`, or the raw body with an image/* Content-Type."""

    # BentoML documents the field (OpenAPI, Swagger UI, bentoml.SyncHTTPClient) from this
    # annotation, but reading the request is ours: the image stays in memory (no temporary files),
    # the size cap applies while reading, malformed requests get 4xx answers, and a URL in the
    # field is never fetched. The API method receives the encoded image as bytes.
    file: Annotated[Path, ContentType("image/*")] = Field(
        description="The image: PNG, JPEG, GIF, BMP, WebP or TIFF; a digit on any background."
    )

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> ImageUpload:
        return cls.model_construct(file=await image_bytes(request))
