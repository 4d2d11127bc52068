"""Byte planes of a version-3 chunk (chunks.py), each compressed on its own.

A column's lanes (chunk_columns.py: all first bytes of its values, then all
second bytes...) differ in kind: the low bytes of float32 noise are random,
the top byte (sign, exponent) takes a few values, a plane of time jitter is
uniform over a small range, a constant step's plane is all zeros. One
compressor over all of them joined (versions 1 and 2) codes them with one set
of statistics; a plane apart gets its own. Per plane, in order:

    varint (stored size << 2 | method) | [varint plane size, if compressed] | bytes

    method 0  raw: nothing smaller (random planes, planes under MIN_SIZE bytes)
           1  zstd (level 1, magicless frame, no checksum)
           2  raw deflate (zlib's Huffman-only or run-length strategy)

zstd level 1 goes first on every plane: it is about ten times as fast as
zlib's default level and as small on most planes. Only a plane that zstd
shrinks, but not to a sixteenth, (a small alphabet without long repeats, such
as a float's top byte or jitter in a byte) also tries the two deflate
strategies that code such a plane best, Huffman-only and run-length; the
smallest of the three is kept. A chunk's integrity is the CRC32 that
chunks.py keeps over all of it, so the planes carry no checksums of their own.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence

import zstandard

from mltrail.collector.store.chunk_columns import ColumnError, read_varint, varint

RAW, ZSTD, DEFLATE = 0, 1, 2
MIN_SIZE = 32  # shorter planes are stored raw: a compressor's framing costs more
_TRY_DEFLATE_BELOW = 16  # a plane zstd shrinks less than this many times also tries deflate
_ZSTD_PARAMS = zstandard.ZstdCompressionParameters.from_level(
    1, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_checksum=0, write_content_size=0,
    write_dict_id=0)
_DEFLATE_STRATEGIES = (zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE)
_codecs = threading.local()  # zstandard's (de)compressor objects are one thread's each


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    codecs = getattr(_codecs, "zstd", None)
    if codecs is None:
        codecs = _codecs.zstd = (zstandard.ZstdCompressor(compression_params=_ZSTD_PARAMS),
                                 zstandard.ZstdDecompressor(
                                     format=zstandard.FORMAT_ZSTD1_MAGICLESS))
    return codecs


def _deflate(plane: bytes, strategy: int) -> bytes:
    window = max(9, min(15, len(plane).bit_length()))  # no larger than the plane
    packer = zlib.compressobj(6, zlib.DEFLATED, -window, 8, strategy)
    return packer.compress(plane) + packer.flush()


def _smallest(plane: bytes) -> tuple[int, bytes]:
    size = len(plane)
    if size < MIN_SIZE:
        return RAW, plane
    best = _zstd()[0].compress(plane)
    method = ZSTD
    if size < len(best) * _TRY_DEFLATE_BELOW and len(best) < size:
        for strategy in _DEFLATE_STRATEGIES:
            other = _deflate(plane, strategy)
            if len(other) < len(best):
                method, best = DEFLATE, other
    return (method, best) if len(best) < size else (RAW, plane)


def pack_planes(planes: Sequence[bytes], out: bytearray) -> None:
    """``planes`` appended to ``out``, each compressed on its own (empty ones left out)."""
    for plane in planes:
        if not plane:
            continue
        method, data = _smallest(plane)
        varint(out, len(data) << 2 | method)
        if method != RAW:
            varint(out, len(plane))
        out += data


def unpack_planes(data: memoryview) -> bytes:
    """The planes of ``data`` (all of it) decompressed and joined: the column bytes."""
    parts: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        entry, pos = read_varint(data, pos)
        method, stored = entry & 3, entry >> 2
        size = stored
        if method != RAW:
            size, pos = read_varint(data, pos)
        if pos + stored > end:
            raise ColumnError("chunk ends inside a byte plane")
        parts.append(_inflate(method, data[pos:pos + stored], size))
        pos += stored
    return b"".join(parts)


def _inflate(method: int, data: memoryview, size: int) -> bytes:
    try:
        if method == RAW:
            plane = bytes(data)
        elif method == ZSTD:
            plane = _zstd()[1].decompress(data, max_output_size=size)
        elif method == DEFLATE:
            plane = zlib.decompress(data, -15, size)
        else:
            raise ColumnError(f"chunk has a byte plane of unknown method {method}")
    except (zstandard.ZstdError, zlib.error) as exc:
        raise ColumnError(f"chunk byte plane does not decompress ({exc})") from None
    if len(plane) != size:
        raise ColumnError(f"chunk byte plane is {len(plane)} bytes, its entry says {size}")
    return plane
