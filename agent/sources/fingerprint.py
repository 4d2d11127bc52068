"""A tailed file's identity by content: a CRC32C of its first bytes.

A checkpoint's fingerprint covers the file's first ``fp_len`` bytes, and
``fp_len`` is at least ``min(end, FINGERPRINT_BYTES)`` for every ``end`` the
checkpoint names (its offset, its pending cuts): whatever it says was read is
vouched for by the fingerprint. So the fingerprint grows from the very bytes
a read cut (``grown``), never from a read of the head of its own: a writer
can truncate and rewrite the file between two reads, and a head read apart
from the cut bytes would vouch for content the cuts do not hold (an offset in
the middle of the next copytruncate period taken for the old one at restart,
and its copy not recognised as one).
"""

from __future__ import annotations

import os

import google_crc32c

from mltrail.agent.sources.checkpoint import FINGERPRINT_BYTES

Fingerprint = tuple[int, int]  # (length, CRC32C of the file's first length bytes)


def fingerprint(fd: int, length: int) -> Fingerprint:
    """The fingerprint of the file's first ``length`` bytes (fewer if it is shorter)."""
    head = os.pread(fd, min(length, FINGERPRINT_BYTES), 0)
    return len(head), google_crc32c.value(head)


def grown(fp: Fingerprint, start: int, data: bytes) -> Fingerprint:
    """``fp`` extended over ``data`` (the file's bytes from ``start`` on) where they continue
    it, up to ``FINGERPRINT_BYTES``. Unchanged when they do not touch its end."""
    length, crc = fp
    if length >= FINGERPRINT_BYTES or not start <= length < start + len(data):
        return fp
    piece = data[length - start:FINGERPRINT_BYTES - start]
    return length + len(piece), google_crc32c.extend(crc, piece)


def same_head(fd: int, fp: Fingerprint) -> bool:
    """Whether the file still begins with the bytes ``fp`` covers."""
    return fingerprint(fd, fp[0]) == fp


def file_head(path: str) -> bytes | None:
    """The first ``FINGERPRINT_BYTES`` of the file at ``path`` (None: gone)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(FINGERPRINT_BYTES)
    except OSError:
        return None


def starts_alike(a: bytes, b: bytes) -> bool:
    """Whether two heads agree over their common length (never when one is empty)."""
    common = min(len(a), len(b))
    return common > 0 and a[:common] == b[:common]


def starts_with(head: bytes, fp: Fingerprint) -> bool:
    """Whether ``head`` begins with the bytes ``fp`` covers (never for an empty ``fp``)."""
    return len(head) >= fp[0] > 0 and google_crc32c.value(head[:fp[0]]) == fp[1]
