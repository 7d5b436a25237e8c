"""dlops/http/upload.py in-process: the fast readings of a multipart body agree with the general
parser.

The common shapes of a part's head and of the Content-Type (what curl, browsers, requests and
httpx send) are read by a regular expression; everything else by python-multipart's parser of
header parameters. Both must give the same answer wherever the fast one answers.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from dlops.http.upload import (
    SIMPLE_CONTENT_TYPE,
    SIMPLE_PART_HEAD,
    _boundary,
    _boundary_parsed,
    _part_name,
    _part_name_parsed,
    files_from_multipart,
)

TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=20)


@given(
    name=TEXT,
    filename=st.none() | TEXT,
    content_type=st.none() | st.sampled_from(["image/png", "application/octet-stream"]),
    header=st.sampled_from(["Content-Disposition", "content-disposition", "CONTENT-DISPOSITION"]),
    after_boundary=st.sampled_from(["", "\r\n"]),
)
@example(
    name="file",
    filename="digit.png",
    content_type="image/png",
    header="Content-Disposition",
    after_boundary="\r\n",
)
@example(
    name='fi"le', filename="x", content_type=None, header="Content-Disposition", after_boundary=""
)
def test_a_part_head_reads_the_same_either_way(
    name: str, filename: str | None, content_type: str | None, header: str, after_boundary: str
) -> None:
    head = f'{after_boundary}{header}: form-data; name="{name}"'
    if filename is not None:
        head += f'; filename="{filename}"'
    if content_type is not None:
        head += f"\r\nContent-Type: {content_type}"
    encoded = head.encode("latin-1")
    assert _part_name(encoded) == _part_name_parsed(encoded)


def test_the_fast_reading_covers_what_clients_send() -> None:
    disposition = b'Content-Disposition: form-data; name="file"; filename="d.png"'
    curl = b"\r\n" + disposition + b"\r\nContent-Type: image/png"
    assert SIMPLE_PART_HEAD.match(curl, 2) is not None
    assert _part_name(curl) == ("file", True)
    assert SIMPLE_CONTENT_TYPE.fullmatch("multipart/form-data; boundary=----WebKitFormBoundaryx7")


@given(boundary=st.text(st.sampled_from("abcXYZ019'()+_,./:=?- \""), min_size=1, max_size=72))
@example(boundary="dlopsbench8c1f6b2a5e9d")
def test_a_boundary_reads_the_same_either_way(boundary: str) -> None:
    for content_type in (
        f"multipart/form-data; boundary={boundary}",
        f"multipart/form-data;boundary={boundary}",
        f'multipart/form-data; boundary="{boundary}"',
    ):
        assert _boundary(content_type) == _boundary_parsed(content_type)


def test_files_come_out_of_a_body_in_order() -> None:
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nAAA\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\nBB\r\n'
        b"--xyz--\r\n"
    )
    assert files_from_multipart("multipart/form-data; boundary=xyz", body) == [b"AAA", b"BB"]
