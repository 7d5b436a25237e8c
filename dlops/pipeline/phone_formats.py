"""HEIF and AVIF headers: what their decoders allocate, read from the container and the streams.

Both are ISO base media files: a 'meta' box lists the items (pictures, grid canvases, alpha
planes, thumbnails, Exif), their properties ('ispe': the size an item declares; 'hvcC'; 'auxC';
'irot'...) and where their bytes lie. Pillow reports the primary item's declared size, but:
- libavif decodes an AV1 stream at the size of its own sequence header, then scales the planes
  to 'ispe' (a 40x40 'ispe' over a 16384x16384 stream of one colour: a 1 KB file, 400 MB);
- libheif lets an HEVC stream exceed its item's 'ispe' by one 64-pixel coding unit each way,
  composes a grid on a canvas sized by the grid's own header, and decodes an alpha plane at the
  alpha item's size before scaling it to the picture;
- both decode at the bit depth and chroma subsampling of the stream (its AV1 sequence header,
  the HEVC parameter sets, which may also come inside the item's data), whatever the file
  declares: libheif checks the bit depth and the size after decoding, the chroma never.
So the items the decode touches (the primary, its tiles, its alpha plane) are read here down to
those stream headers, and the cost is bounded from them. Anything that cannot be read is
refused as damaged: the decoders could not decode it either.

Nothing here decodes a pixel or imports Pillow: :mod:`dlops.pipeline.decode`, the one place that
opens untrusted images, calls :func:`coded_layout` from ``open_image`` and turns
:class:`MalformedFile` and :class:`UnsupportedStructure` into its ``ImageError``s.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

# Threads each HEIF or AVIF decode may use (libde265 for a grid's tiles, dav1d): fixed rather than
# Pillow's one per core, since each dav1d thread holds ~0.5 MiB however small the picture, and the
# service already decodes several images at once on its own threads.
PHONE_DECODE_THREADS = 4
HEVC_CODING_UNIT = 64  # libheif's slack over 'ispe' for an HEVC picture, each way
AV1_ALIGNMENT = 128  # dav1d allocates planes padded to its 128-pixel superblocks
# Decoder side information per pixel, beyond the planes: libde265's motion vectors, prediction
# modes and deblocking flags per 4x4 block; dav1d's motion-field and filter buffers.
HEVC_SIDE_BYTES = 1.0
AV1_SIDE_BYTES = 1.0
# libheif converts high-bit-depth YCbCr to 8-bit RGB(A) through 16-bit RGBA steps.
HIGH_DEPTH_CONVERSION_BYTES = 8
# Samples per pixel of each chroma format (HEVC chroma_format_idc: 4:0:0, 4:2:0, 4:2:2, 4:4:4).
CHROMA_SAMPLES = (1.0, 1.5, 2.0, 3.0)
HEVC_SPS = 33  # nal_unit_type of a sequence parameter set
HEVC_FIRST_NON_VCL = 32  # nal_unit_types below this are slices of a picture
# 'ftyp' brands of HEIF (still images and sequences, HEVC or any codec) and AVIF files.
PHONE_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
    | {b"mif1", b"mif2", b"msf1", b"avif", b"avis"}
)
AV1_SEQUENCE_HEADER = 1  # obu_type
AV1_FRAME_OBUS = (3, 6)  # obu_types that start a frame: a frame header, a frame
# The auxiliary types by which libheif and libavif recognise an alpha plane ('auxC').
ALPHA_URNS = (
    b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha",
    b"urn:mpeg:hevc:2015:auxid:1",
    b"urn:mpeg:avc:2015:auxid:1",
)
# Boxes in one box, and entries of every table (items, locations, extents, associations,
# references) and NAL units or OBUs of every decoded item together: real files hold tens to a
# few hundred (libheif itself refuses more than 1,000 items); this bounds the parse's time
# (~0.1 s), whatever the upload makes its entries point at.
MAX_CONTAINER_ENTRIES = 10_000
MAX_PARSED_ENTRIES = 100_000
# Bytes of a parameter set or sequence header read: the fields needed come within the first few.
STREAM_HEADER_BYTES = 1024
MAX_ITEM_DEPTH = 4  # a grid of tiles, an 'iden' of a grid: nesting deeper is refused


@dataclass(frozen=True)
class CodedLayout:
    """What decoding a HEIF or AVIF allocates, as read from the file by :func:`coded_layout`."""

    # The decoder's own planes: every decoded stream at its coded size and depth, libheif's copy
    # of it, a grid's canvas, scaled and transformed copies, alpha planes, side information.
    decoder_bytes: int
    # The primary picture as composed by the decoder (a grid's canvas, before any crop).
    canvas_pixels: int
    # The largest picture (width, height) the decoder allocates for any one item or stream.
    largest: tuple[int, int]

    @classmethod
    def declared(cls, image_format: str, width: int, height: int) -> CodedLayout:
        """The layout if the streams were as the file declares, at their widest (16-bit 4:4:4)."""
        padded = (width + AV1_ALIGNMENT) * (height + AV1_ALIGNMENT)
        widest = 2 * CHROMA_SAMPLES[3]
        decoded = padded * (2 * widest + HEVC_SIDE_BYTES + HIGH_DEPTH_CONVERSION_BYTES)
        return cls(int(decoded), width * height, (width, height))


class MalformedFile(ValueError):
    """The container or a stream header cannot be read: damaged, truncated or hostile."""


class UnsupportedStructure(ValueError):
    """A structure not decoded here (an animation, a picture in another codec); the message says
    what was found and what to send instead."""


@dataclass
class _Item:
    kind: bytes = b""
    properties: list[int] = field(default_factory=list)  # indices into the 'ipco' box
    # construction method, data reference, base offset, extents (offset, length)
    location: tuple[int, int, int, list[tuple[int, int]]] | None = None


@dataclass(frozen=True)
class _Decoded:
    """What decoding one item (and the items it is made of) allocates."""

    cost: float  # bytes
    width: int  # the picture it decodes to
    height: int
    samples: float  # per pixel, of its widest stream
    sample_bytes: int  # 1, or 2 above 8 bits
    largest: tuple[int, int]


def _uint(data: bytes | memoryview, position: int, size: int, end: int) -> int:
    if position < 0 or position + size > end:
        raise MalformedFile("a field runs past the end of its box")
    return int.from_bytes(data[position : position + size], "big")


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of each box in ``data[start:end]``."""
    for _ in range(MAX_CONTAINER_ENTRIES):
        if start >= end:
            return
        size, header = _uint(data, start, 4, end), 8
        kind = data[start + 4 : start + 8]
        if len(kind) < 4:
            raise MalformedFile("a box header is cut off")
        if size == 1:
            size, header = _uint(data, start + 8, 8, end), 16
        elif size == 0:
            size = end - start
        if size < header or size > end - start:
            raise MalformedFile("a box runs past its container (truncated?)")
        yield kind, start + header, start + size
        start += size
    raise MalformedFile("too many boxes")


class _Container:
    """The items of an ISO base media file's 'meta' box: kinds, properties, data, references."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.brand = b""
        self.has_tracks = False
        self.primary: int | None = None
        self.items: dict[int, _Item] = {}
        self.properties: list[tuple[bytes, int, int]] = []
        self.references: dict[bytes, dict[int, list[int]]] = {}
        self.idat = (0, 0)
        self.decoded: dict[int, _Decoded] = {}  # _decoded's results, each item read once
        self.entries_left = MAX_PARSED_ENTRIES
        meta = None
        for kind, start, end in _boxes(data, 0, len(data)):
            if kind == b"ftyp":
                self.brand = data[start : start + 4]
            elif kind == b"moov":
                self.has_tracks = True
            elif kind == b"meta" and meta is None:
                meta = start, end
        if meta is not None:
            self._read_meta(*meta)

    def entries(self, count: int) -> range:
        """``range(count)``, counted against the entries the whole parse may read."""
        self.entries_left -= count
        if self.entries_left < 0:
            raise MalformedFile("too many entries in the file's tables or streams")
        return range(count)

    def _item(self, item_id: int) -> _Item:
        item = self.items.get(item_id)
        if item is None:
            if len(self.items) >= MAX_CONTAINER_ENTRIES:
                raise MalformedFile("too many items")
            item = self.items[item_id] = _Item()
        return item

    def _read_meta(self, start: int, end: int) -> None:
        data = self.data
        for kind, first, last in _boxes(data, start + 4, end):  # 'meta' is a full box
            if kind == b"pitm":
                size = 2 if _uint(data, first, 1, last) == 0 else 4
                self.primary = _uint(data, first + 4, size, last)
            elif kind == b"iinf":
                self._read_iinf(first, last)
            elif kind == b"iloc":
                self._read_iloc(first, last)
            elif kind == b"idat":
                self.idat = first, last
            elif kind == b"iprp":
                for child, child_first, child_last in _boxes(data, first, last):
                    if child == b"ipco":
                        self.properties = list(_boxes(data, child_first, child_last))
                    elif child == b"ipma":
                        self._read_ipma(child_first, child_last)
            elif kind == b"iref":
                self._read_iref(first, last)

    def _read_iinf(self, start: int, end: int) -> None:
        data = self.data
        count_size = 2 if _uint(data, start, 1, end) == 0 else 4
        for kind, first, last in _boxes(data, start + 4 + count_size, end):
            if kind != b"infe" or _uint(data, first, 1, last) < 2:
                continue  # versions 0 and 1 describe no image item
            id_size = 2 if data[first] == 2 else 4
            _uint(data, first + 6 + id_size, 4, last)  # the item type is there
            item_type = data[first + 6 + id_size : first + 10 + id_size]
            self._item(_uint(data, first + 4, id_size, last)).kind = item_type

    def _read_iloc(self, start: int, end: int) -> None:
        data = self.data
        version = _uint(data, start, 1, end)
        sizes = _uint(data, start + 4, 2, end)
        offset_size, length_size = sizes >> 12, (sizes >> 8) & 15
        base_size, index_size = (sizes >> 4) & 15, (sizes & 15 if version in (1, 2) else 0)
        if any(size not in (0, 4, 8) for size in (offset_size, length_size, base_size, index_size)):
            raise MalformedFile("an 'iloc' field size is not 0, 4 or 8")
        id_size = 2 if version < 2 else 4
        count = _uint(data, start + 6, id_size, end)
        position = start + 6 + id_size
        for _ in self.entries(count):
            item = self._item(_uint(data, position, id_size, end))
            position += id_size
            method = 0
            if version in (1, 2):
                method = _uint(data, position, 2, end) & 15
                position += 2
            reference = _uint(data, position, 2, end)
            base = _uint(data, position + 2, base_size, end)
            extent_count = _uint(data, position + 2 + base_size, 2, end)
            position += 4 + base_size
            extents = []
            for _ in self.entries(extent_count):
                position += index_size
                offset = _uint(data, position, offset_size, end)
                length = _uint(data, position + offset_size, length_size, end)
                position += offset_size + length_size
                extents.append((offset, length))
            item.location = method, reference, base, extents

    def _read_ipma(self, start: int, end: int) -> None:
        data = self.data
        version, flags = _uint(data, start, 1, end), _uint(data, start + 1, 3, end)
        id_size, index_size = (2 if version < 1 else 4), (2 if flags & 1 else 1)
        index_mask = 0x7FFF if index_size == 2 else 0x7F
        count = _uint(data, start + 4, 4, end)
        position = start + 8
        for _ in self.entries(count):
            item = self._item(_uint(data, position, id_size, end))
            associations = _uint(data, position + id_size, 1, end)
            position += id_size + 1
            for _ in self.entries(associations):
                index = _uint(data, position, index_size, end) & index_mask
                position += index_size
                if index:
                    item.properties.append(index - 1)

    def _read_iref(self, start: int, end: int) -> None:
        data = self.data
        id_size = 2 if _uint(data, start, 1, end) == 0 else 4
        for kind, first, last in _boxes(data, start + 4, end):
            source = _uint(data, first, id_size, last)
            count = _uint(data, first + id_size, 2, last)
            targets = [
                _uint(data, first + id_size + 2 + index * id_size, id_size, last)
                for index in self.entries(count)
            ]
            self.references.setdefault(kind, {}).setdefault(source, []).extend(targets)

    def property(self, item: _Item, kind: bytes) -> tuple[int, int] | None:
        """The (payload start, end) of the item's first property of ``kind``."""
        for index in item.properties:
            if index < len(self.properties) and self.properties[index][0] == kind:
                return self.properties[index][1:]
        return None

    def has_property(self, item: _Item, *kinds: bytes) -> bool:
        return any(self.property(item, kind) is not None for kind in kinds)

    def size(self, item: _Item) -> tuple[int, int] | None:
        """The item's 'ispe' (width, height)."""
        found = self.property(item, b"ispe")
        if found is None:
            return None
        start, end = found
        return _uint(self.data, start + 4, 4, end), _uint(self.data, start + 8, 4, end)

    def is_alpha(self, item: _Item) -> bool:
        found = self.property(item, b"auxC")
        if found is None:
            return False
        start, end = found
        return self.data[start + 4 : end].split(b"\0", 1)[0] in ALPHA_URNS

    def payload(self, item_id: int) -> bytes | memoryview:
        """The item's data, from the file or the 'idat' box (a view when in one piece)."""
        item = self.items.get(item_id)
        if item is None or item.location is None:
            raise MalformedFile("an item has no data")
        method, reference, base, extents = item.location
        if method == 0 and reference == 0:
            source_start, source_end = 0, len(self.data)
        elif method == 1:
            source_start, source_end = self.idat
        else:  # another file, or offsets into other items: neither decoder reads these
            raise MalformedFile("an item's data is not in the file")
        chunks = []
        for offset, length in extents:
            first = source_start + base + offset
            last = source_end if length == 0 else first + length
            if last > source_end:
                raise MalformedFile("an item's data runs past the end of the file (truncated?)")
            chunks.append(memoryview(self.data)[first:last])
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def grid(self, item_id: int) -> tuple[int, int, int, int]:
        """A grid item's rows, columns and canvas width and height."""
        data = self.payload(item_id)
        flags = _uint(data, 1, 1, len(data))
        rows, columns = _uint(data, 2, 1, len(data)) + 1, _uint(data, 3, 1, len(data)) + 1
        size = 4 if flags & 1 else 2
        width, height = _uint(data, 4, size, len(data)), _uint(data, 4 + size, size, len(data))
        return rows, columns, width, height


class _Bits:
    """Big-endian bits of a stream header."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = 8 * len(data)

    def u(self, count: int) -> int:
        if count > self.left:
            raise MalformedFile("a stream header is cut off")
        self.left -= count
        return (self.value >> self.left) & ((1 << count) - 1)

    def leading_zeros(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 32:
                raise MalformedFile("a stream header holds an impossible number")
        return zeros

    def ue(self) -> int:  # HEVC's exp-Golomb code
        zeros = self.leading_zeros()
        return (1 << zeros) - 1 + self.u(zeros)

    def uvlc(self) -> int:  # AV1's
        zeros = self.leading_zeros()
        return (1 << 32) - 1 if zeros >= 32 else (1 << zeros) - 1 + self.u(zeros)


@functools.lru_cache(maxsize=64)  # a grid's tiles share one 'hvcC'
def _hevc_sps_format(nal: bytes) -> tuple[float, int]:
    """(samples per pixel, bytes per sample) of an HEVC sequence parameter set NAL unit."""
    bits = _Bits(nal[2:STREAM_HEADER_BYTES].replace(b"\0\0\3", b"\0\0"))
    bits.u(4)  # sps_video_parameter_set_id
    sub_layers = bits.u(3)  # sps_max_sub_layers_minus1
    bits.u(1 + 88 + 8)  # temporal_id_nesting, general profile, tier and level
    present = [(bits.u(1), bits.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        bits.u(2 * (8 - sub_layers))
    for profile, level in present:
        bits.u(88 * profile + 8 * level)
    bits.ue()  # sps_seq_parameter_set_id
    chroma = bits.ue()
    if chroma > 3:
        raise MalformedFile("an HEVC parameter set has an unknown chroma format")
    if chroma == 3:
        bits.u(1)  # separate_colour_plane_flag: three full planes either way
    bits.ue()  # the picture's size: libheif refuses one beyond the item's 'ispe' (+64)
    bits.ue()
    if bits.u(1):  # conformance_window_flag
        for _ in range(4):
            bits.ue()
    depth = 8 + max(bits.ue(), bits.ue())
    if depth > 16:
        raise MalformedFile("an HEVC parameter set has an impossible bit depth")
    return CHROMA_SAMPLES[chroma], 1 if depth <= 8 else 2


def _hevc_stream(container: _Container, item_id: int, item: _Item) -> tuple[float, int, int]:
    """(samples per pixel, bytes per sample, pictures) of an HEVC item: the widest format among
    its parameter sets (its 'hvcC''s and any in its own data), and how many pictures its data
    holds (one, unless hostile: libde265 would decode and keep every one)."""
    config = container.property(item, b"hvcC")
    if config is None:
        raise MalformedFile("an HEVC item has no 'hvcC'")
    data, (position, end) = container.data, config
    length_size = (_uint(data, position + 21, 1, end) & 3) + 1
    arrays = _uint(data, position + 22, 1, end)
    position += 23
    parameter_sets = []
    for _ in container.entries(arrays):
        count = _uint(data, position + 1, 2, end)
        position += 3
        for _ in container.entries(count):
            length = _uint(data, position, 2, end)
            parameter_sets.append(
                data[position + 2 : position + 2 + min(length, STREAM_HEADER_BYTES)]
            )
            position += 2 + length
    payload = container.payload(item_id)
    position = pictures = 0
    while position < len(payload):
        container.entries(1)
        length = _uint(payload, position, length_size, len(payload))
        position += length_size
        if position + length > len(payload):
            raise MalformedFile("an HEVC item's data is cut off (truncated?)")
        kind = (payload[position] >> 1) & 0x3F if length >= 3 else None
        if kind == HEVC_SPS:
            end = position + min(length, STREAM_HEADER_BYTES)
            parameter_sets.append(bytes(payload[position:end]))
        elif kind is not None and kind < HEVC_FIRST_NON_VCL and payload[position + 2] & 0x80:
            pictures += 1  # a slice with first_slice_segment_in_pic_flag: a new picture
        position += length
    formats = [
        _hevc_sps_format(nal)
        for nal in parameter_sets
        if len(nal) >= 2 and (nal[0] >> 1) & 0x3F == HEVC_SPS
    ]
    if not formats:
        raise MalformedFile("an HEVC item has no sequence parameter set")
    samples, sample_bytes = max(s for s, _ in formats), max(b for _, b in formats)
    return samples, sample_bytes, max(pictures, 1)


def _av1_sequence_header(data: bytes) -> tuple[int, int, float, int]:
    """(max frame width, height, samples per pixel, bytes per sample) of an AV1 sequence header."""
    bits = _Bits(data[:STREAM_HEADER_BYTES])
    profile = bits.u(3)
    if profile > 2:
        raise MalformedFile("an AV1 sequence header has an unknown profile")
    bits.u(1)  # still_picture
    if bits.u(1):  # reduced_still_picture_header
        bits.u(5)
        reduced = True
    else:
        reduced = False
        decoder_model = delay_length = 0
        if bits.u(1):  # timing_info_present_flag
            bits.u(64)
            if bits.u(1):  # equal_picture_interval
                bits.uvlc()
            decoder_model = bits.u(1)
            if decoder_model:
                delay_length = bits.u(5) + 1
                bits.u(32 + 5 + 5)
        display_delay = bits.u(1)
        for _ in range(bits.u(5) + 1):  # operating points
            bits.u(12)
            if bits.u(5) > 7:
                bits.u(1)
            if decoder_model and bits.u(1):
                bits.u(2 * delay_length + 1)
            if display_delay and bits.u(1):
                bits.u(4)
    width_bits, height_bits = bits.u(4) + 1, bits.u(4) + 1
    width, height = bits.u(width_bits) + 1, bits.u(height_bits) + 1
    if not reduced and bits.u(1):  # frame_id_numbers_present_flag
        bits.u(7)
    bits.u(3)  # 128x128 superblocks, filter intra, intra edge filter
    if not reduced:
        bits.u(4)  # interintra, masked compound, warped motion, dual filter
        order_hint = bits.u(1)
        if order_hint:
            bits.u(2)
        # Screen content tools chosen per frame or forced on: then seq_choose_integer_mv, and
        # seq_force_integer_mv when that is 0 (evaluated left to right, as the syntax reads).
        if (bits.u(1) or bits.u(1)) and not bits.u(1):
            bits.u(1)
        if order_hint:
            bits.u(3)
    bits.u(3)  # superres (still within the max frame size), CDEF, loop restoration
    high_bitdepth = bits.u(1)
    if profile == 2 and high_bitdepth:
        depth = 12 if bits.u(1) else 10
    else:
        depth = 10 if high_bitdepth else 8
    monochrome = 0 if profile == 1 else bits.u(1)
    primaries = transfer = matrix = 2
    if bits.u(1):  # color_description_present_flag
        primaries, transfer, matrix = bits.u(8), bits.u(8), bits.u(8)
    if monochrome:
        samples = 1.0
    elif (primaries, transfer, matrix) == (1, 13, 0):  # sRGB: always 4:4:4
        samples = 3.0
    else:
        bits.u(1)  # color_range
        if profile == 0:
            across = down = 1
        elif profile == 1:
            across = down = 0
        elif depth == 12:
            across = bits.u(1)
            down = bits.u(1) if across else 0
        else:
            across, down = 1, 0
        samples = 1 + 2 / ((1 + across) * (1 + down))
    return width, height, samples, 1 if depth == 8 else 2


def _av1_stream(container: _Container, item_id: int) -> tuple[int, int, float, int, int]:
    """(width, height, samples per pixel, bytes per sample, frames) of an AV1 item: the largest
    frame size and widest format among its sequence headers, and how many frames its data holds
    (one, unless hostile: dav1d would decode every one, keeping up to eight as references)."""
    payload = container.payload(item_id)
    found: list[tuple[int, int, float, int]] = []
    position = frames = 0
    while position < len(payload):
        container.entries(1)
        header = payload[position]
        position += 2 if header & 4 else 1  # obu_extension_flag
        size = len(payload) - position
        if header & 2:  # obu_has_size_field: a LEB128 number
            size = 0
            for index in range(8):
                byte = _uint(payload, position, 1, len(payload))
                position += 1
                size |= (byte & 0x7F) << (7 * index)
                if not byte & 0x80:
                    break
        if position + size > len(payload):
            raise MalformedFile("an AV1 item's data is cut off (truncated?)")
        obu_type = (header >> 3) & 15
        if obu_type == AV1_SEQUENCE_HEADER:
            header_bytes = payload[position : position + min(size, STREAM_HEADER_BYTES)]
            found.append(_av1_sequence_header(bytes(header_bytes)))
        elif obu_type in AV1_FRAME_OBUS:
            frames += 1
        position += size
    if not found:
        raise MalformedFile("an AV1 item has no sequence header")
    return (
        max(width for width, _, _, _ in found),
        max(height for _, height, _, _ in found),
        max(samples for _, _, samples, _ in found),
        max(size for _, _, _, size in found),
        max(frames, 1),
    )


def _decoded(container: _Container, item_id: int, image_format: str, depth: int = 0) -> _Decoded:
    """What decoding ``item_id`` allocates: a coded picture, or a grid (or 'iden') of others."""
    if item_id in container.decoded:
        return container.decoded[item_id]
    item = container.items.get(item_id)
    if item is None or depth > MAX_ITEM_DEPTH:
        raise MalformedFile("an image refers to a missing item, or nests items too deep")
    declared = container.size(item)
    heif = image_format == "HEIF"
    if item.kind == (b"hvc1" if heif else b"av01"):
        if declared is None:
            raise MalformedFile("a coded image item has no 'ispe'")
        width, height = declared
        if heif:
            samples, sample_bytes, pictures = _hevc_stream(container, item_id, item)
            padded = (width + HEVC_CODING_UNIT) * (height + HEVC_CODING_UNIT)
            # libde265's pictures with their side information, then libheif's copy of one.
            plane = samples * sample_bytes
            cost = padded * (pictures * (plane + HEVC_SIDE_BYTES) + plane)
            largest = declared
        else:
            stream = _av1_stream(container, item_id)
            frame_width, frame_height, samples, sample_bytes, frames = stream
            padded = (frame_width + AV1_ALIGNMENT) * (frame_height + AV1_ALIGNMENT)
            cost = padded * (frames * samples * sample_bytes + AV1_SIDE_BYTES)
            if (frame_width, frame_height) != declared:  # libavif scales it to 'ispe'
                cost += width * height * samples * sample_bytes
            largest = max(declared, (frame_width, frame_height), key=lambda s: s[0] * s[1])
    elif item.kind == b"grid":
        rows, columns, width, height = container.grid(item_id)
        if declared is not None:
            width, height = max(width, declared[0]), max(height, declared[1])
        tile_ids = container.references.get(b"dimg", {}).get(item_id, [])[: rows * columns]
        if len(tile_ids) < rows * columns:
            raise MalformedFile("a grid lacks tiles")
        tiles = [_decoded(container, tile, image_format, depth + 1) for tile in set(tile_ids)]
        samples = max(tile.samples for tile in tiles)
        sample_bytes = max(tile.sample_bytes for tile in tiles)
        # libheif decodes a few tiles at a time; libavif may hold every tile's planes.
        at_once = min(rows * columns, PHONE_DECODE_THREADS) if heif else rows * columns
        cost = width * height * samples * sample_bytes + at_once * max(t.cost for t in tiles)
        largest = max(
            [(width, height), *(tile.largest for tile in tiles)], key=lambda s: s[0] * s[1]
        )
    elif item.kind == b"iden" and heif:
        sources = container.references.get(b"dimg", {}).get(item_id, [])
        if len(sources) != 1:
            raise MalformedFile("an 'iden' item does not derive from one image")
        source = _decoded(container, sources[0], image_format, depth + 1)
        width, height, samples, sample_bytes = (
            source.width,
            source.height,
            source.samples,
            source.sample_bytes,
        )
        cost, largest = source.cost + width * height * samples * sample_bytes, source.largest
    else:
        kind = item.kind.decode("latin-1")
        raise UnsupportedStructure(
            f"the {image_format} picture is coded as '{kind}', which this service does not "
            f"decode; send an {'HEVC-coded HEIC' if heif else 'AV1-coded AVIF'} or a JPEG"
        )
    if heif and container.has_property(item, b"irot", b"imir", b"clap"):
        cost += width * height * samples * sample_bytes  # libheif's transformed copy
    decoded = container.decoded[item_id] = _Decoded(
        cost, width, height, samples, sample_bytes, largest
    )
    return decoded


def coded_layout(data: bytes, image_format: str) -> CodedLayout:
    """What decoding this HEIF or AVIF allocates, from its container and its streams' headers.

    Raises ``MalformedFile`` when they cannot be read (damaged or truncated, as the decoder would
    find), ``UnsupportedStructure`` for structures not decoded here (an animated AVIF, a HEIF not
    coded in HEVC).
    """
    container = _Container(data)
    if image_format == "AVIF" and container.has_tracks and container.brand != b"avif":
        raise UnsupportedStructure(
            "the AVIF is an image sequence (an animation); only still AVIF pictures are "
            "read: send one frame as a still AVIF, a PNG or a JPEG"
        )
    if container.primary is None:
        raise MalformedFile("no primary item")
    color = _decoded(container, container.primary, image_format)
    cost, largest = color.cost, color.largest
    for alpha_id, targets in container.references.get(b"auxl", {}).items():
        alpha_item = container.items.get(alpha_id)
        if alpha_item is None or container.primary not in targets:
            continue
        if not container.is_alpha(alpha_item):
            continue  # depth maps, gain maps: not decoded
        alpha = _decoded(container, alpha_id, image_format)
        # Decoded at its own size, then scaled to the picture's.
        cost += alpha.cost + color.width * color.height * alpha.samples * alpha.sample_bytes
        largest = max(largest, alpha.largest, key=lambda s: s[0] * s[1])
    if image_format == "HEIF" and color.sample_bytes > 1:
        cost += color.width * color.height * HIGH_DEPTH_CONVERSION_BYTES
    return CodedLayout(int(cost) + 1, color.width * color.height, largest)


def is_phone_container(data: bytes) -> bool:
    """Whether ``data`` starts with the 'ftyp' box of a HEIF or AVIF (major or compatible)."""
    if data[4:8] != b"ftyp":
        return False
    end = min(int.from_bytes(data[:4], "big"), len(data), 1024)
    brands = {data[index : index + 4] for index in range(8, end - 3, 4)}
    return not brands.isdisjoint(PHONE_BRANDS)


def largest_declared(data: bytes) -> tuple[int, int]:
    """The largest (width, height) an item of a HEIF or AVIF declares ('ispe'), as a last word on
    a file its decoder refused to open: (0, 0) if none does or the container cannot be read."""
    if data[4:8] != b"ftyp":
        return 0, 0
    try:
        container = _Container(data)
        sizes = [container.size(item) for item in container.items.values()]
    except MalformedFile:
        return 0, 0
    return max((s for s in sizes if s), key=lambda s: s[0] * s[1], default=(0, 0))
