"""Hostile uploads and requests, built in memory: what an attacker sends to an image API.

Each builder returns bytes small enough to send cheaply that cost a naive server far more:
pixels declared by a few kilobytes, scans and text chunks that multiply the decoder's work,
multipart and HTTP heads that are parsed byte by byte. Shared by the hostile-input tests
(tests/test_hostile.py) and their benchmark (bench/hostile.py).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# zlib input is fed in slices of this many rows, so a 40 MP image never exists in memory here.
ROWS_PER_SLICE = 65536


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bitonal_png(width: int, height: int, extra_chunks: bytes = b"") -> bytes:
    """A 1-bit greyscale PNG of ``width`` x ``height``, a black bar (a "1") on white across
    its middle third: kilobytes for tens of megapixels."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row_bytes = -(-width // 8)
    white = b"\x00" + b"\xff" * row_bytes  # filter byte "none", then white pixels
    bar = bytearray(white)
    bar[1 + row_bytes * 9 // 20 : 1 + row_bytes * 11 // 20] = bytes(
        row_bytes * 11 // 20 - row_bytes * 9 // 20
    )
    rows = [(height // 3, white), (height - 2 * (height // 3), bytes(bar)), (height // 3, white)]
    compressor = zlib.compressobj(9)
    pixels = bytearray()
    for count, row in rows:
        for first in range(0, count, ROWS_PER_SLICE):
            pixels += compressor.compress(row * min(ROWS_PER_SLICE, count - first))
    pixels += compressor.flush()
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + extra_chunks
        + png_chunk(b"IDAT", bytes(pixels))
        + png_chunk(b"IEND", b"")
    )


def strip_png(length: int = 40_000_000) -> bytes:
    """One pixel wide and ``length`` tall: within a 40 MP limit, absurd in shape."""
    return bitonal_png(1, length)


def text_bomb_png(chunks: int = 60, chunk_bytes: int = 1_000_000) -> bytes:
    """A small PNG carrying ``chunks`` zTXt chunks of ``chunk_bytes`` each once decompressed."""
    text = zlib.compress(b" " * chunk_bytes, 9)
    extra = b"".join(
        png_chunk(b"zTXt", f"Comment{index}".encode() + b"\x00\x00" + text)
        for index in range(chunks)
    )
    return bitonal_png(64, 64, extra)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def many_scans_jpeg(width: int = 6000, height: int = 4000, scans: int = 1200) -> bytes:
    """A progressive greyscale JPEG with ``scans`` extra scans over every block of the image.

    Each added scan codes all blocks as empty in a few bytes (one Huffman table of a single
    symbol, EOB14: a run of up to 32,767 empty blocks), yet the decoder visits every block.
    """
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, "JPEG", quality=75, progressive=True)
    data = buffer.getvalue()
    table = _segment(0xC4, bytes([0x11]) + bytes([1] + [0] * 15) + bytes([0xE0]))
    blocks = -(-width // 8) * -(-height // 8)
    bits = ("0" + "1" * 14) * -(-blocks // 32767)
    bits += "1" * (-len(bits) % 8)
    entropy = bytearray()
    for start in range(0, len(bits), 8):
        entropy.append(int(bits[start : start + 8], 2))
        if entropy[-1] == 0xFF:
            entropy.append(0)  # byte stuffing
    # Component 1, DC table 0 / AC table 1, spectral selection 1..63, no approximation.
    scan = _segment(0xDA, bytes([1, 1, 0x01, 1, 63, 0])) + bytes(entropy)
    return data[:-2] + table + scan * scans + b"\xff\xd9"


def multipart(
    files: list[bytes], boundary: str = "hostile", part_head_padding: int = 0
) -> tuple[bytes, str]:
    """A multipart body with ``files`` in the field ``file``, and its Content-Type.

    ``part_head_padding``: that many ``;`` added to each part's Content-Disposition header.
    """
    padding = b";" * part_head_padding
    body = bytearray()
    for index, file in enumerate(files):
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{index}.png"'.encode()
            + padding
            + b"\r\nContent-Type: image/png\r\n\r\n"
            + file
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), f"multipart/form-data; boundary={boundary}"


def v2_files_request(files: list[bytes]) -> bytes:
    """An Open Inference Protocol infer request carrying ``files`` as base64 ``image_file``."""
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "image_file",
                    "datatype": "BYTES",
                    "shape": [len(files)],
                    "parameters": {"content_type": "base64"},
                    "data": [base64.b64encode(file).decode() for file in files],
                }
            ]
        }
    ).encode()
