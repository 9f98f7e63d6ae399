"""TFRecord framing without TensorFlow: ``uint64 length | uint32 masked_crc(length) | data | uint32 masked_crc(data)``.

Both checksums are verified on every read (CRC-32C, masked as TensorFlow does), so a flipped bit
or a cut file is reported with the file, the record and which checksum failed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

import google_crc32c
import numpy as np

from connectors.base import SourceError

HEADER_BYTES = 12
FOOTER_BYTES = 4
MAX_RECORD_BYTES = 1 << 30
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TensorFlow's masked CRC-32C: rotate right by 15 bits and add a constant (mod 2**32)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One record in TFRecord framing (used by tests and sample writers)."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


@dataclass(frozen=True)
class RecordSpan:
    index: int
    offset: int
    length: int | None  # None when the header could not be trusted (the read then fails with the reason)


@dataclass(frozen=True)
class Scan:
    """Every record a scan located, plus the byte ranges it had to skip to find them again."""

    spans: list[RecordSpan]
    problems: list[str]
    gaps: list[tuple[int, int]]  # [start, end) byte ranges holding no locatable record


def scan_records(handle: BinaryIO, path: str, size: int, max_bytes: int = MAX_RECORD_BYTES) -> tuple[list[RecordSpan],
                                                                                                     str]:
    """Offsets of every record from the headers alone (data is skipped, not read or checked).

    Returns the spans and, when the framing broke, why (``scan_framing`` has the details).
    """
    scan = scan_framing(handle, path, size, max_bytes)
    return scan.spans, "; ".join(scan.problems)


def scan_framing(handle: BinaryIO, path: str, size: int, max_bytes: int = MAX_RECORD_BYTES) -> Scan:
    """Locate every record; after a broken header, resynchronise on the next record whose length and
    data checksums both verify.

    The broken record is still listed (length None) so reading it fails with the reason and the
    episode is quarantined, not lost; the bytes skipped to the next good record are a gap, whose
    records cannot be counted from the file (the caller compares with the declared count).
    """
    spans: list[RecordSpan] = []
    problems: list[str] = []
    gaps: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        index = len(spans)
        handle.seek(offset)
        header = handle.read(HEADER_BYTES)
        if len(header) < HEADER_BYTES:
            spans.append(RecordSpan(index, offset, None))
            problems.append(f"record {index} at byte {offset}: truncated header ({len(header)} of 12 bytes)")
            break
        length, length_crc = struct.unpack("<QI", header)
        if masked_crc32c(header[:8]) == length_crc and length <= max_bytes:
            spans.append(RecordSpan(index, offset, length))
            offset += HEADER_BYTES + length + FOOTER_BYTES
            continue
        spans.append(RecordSpan(index, offset, None))
        found = resync(handle, offset + 1, size, max_bytes)
        end = size if found is None else found
        problems.append(f"record {index} at byte {offset}: bad length checksum; "
                        + ("no valid record after it" if found is None else f"next valid record at byte {found}"))
        if end > offset + HEADER_BYTES:
            gaps.append((offset + HEADER_BYTES, end))
        if found is None:
            break
        offset = found
    return Scan(spans, problems, gaps)


def resync(handle: BinaryIO, start: int, size: int, max_bytes: int = MAX_RECORD_BYTES,
           window: int = 4 * 1024 * 1024) -> int | None:
    """The offset of the first record at or after ``start`` whose length and data checksums verify.

    Candidates are cut to positions whose length field fits in the file (its high bytes are zero)
    before any checksum is computed, so a scan costs numpy time, not a CRC per byte.
    """
    limit_bytes = min(max_bytes, size)
    high = max(1, (limit_bytes.bit_length() + 7) // 8)  # bytes of the length that may be non-zero
    position = start
    while position + HEADER_BYTES <= size:
        handle.seek(position)
        buffer = handle.read(window + HEADER_BYTES)
        count = len(buffer) - HEADER_BYTES + 1
        if count <= 0:
            return None
        data = np.frombuffer(buffer, np.uint8)
        fits = np.ones(count, bool)
        for byte in range(high, 8):
            fits &= data[byte:byte + count] == 0
        for candidate in np.flatnonzero(fits).tolist():
            if _verifies(handle, buffer[candidate:candidate + HEADER_BYTES], position + candidate, size, max_bytes):
                return position + candidate
        position += count
    return None


def _verifies(handle: BinaryIO, header: bytes, offset: int, size: int, max_bytes: int) -> bool:
    length, length_crc = struct.unpack("<QI", header)
    if masked_crc32c(header[:8]) != length_crc or length > max_bytes:
        return False
    if offset + HEADER_BYTES + length + FOOTER_BYTES > size:
        return False
    handle.seek(offset + HEADER_BYTES)
    body = handle.read(length + FOOTER_BYTES)
    return len(body) == length + FOOTER_BYTES and masked_crc32c(body[:length]) == struct.unpack("<I", body[length:])[0]


def read_record(handle: BinaryIO, span: RecordSpan, path: str, episode: str,
                max_bytes: int = MAX_RECORD_BYTES) -> bytes:
    """The payload of one record, with both checksums verified."""
    handle.seek(span.offset)
    header = handle.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        raise SourceError(path, f"truncated file: record header at byte {span.offset} has {len(header)} of 12 bytes",
                          episode, "tfrecord.length")
    length, length_crc = struct.unpack("<QI", header)
    if masked_crc32c(header[:8]) != length_crc:
        raise SourceError(path, f"bad CRC of the record length at byte {span.offset}", episode, "tfrecord.length")
    if length > max_bytes:
        raise SourceError(path, f"record of {length} bytes is over the {max_bytes}-byte limit", episode,
                          "tfrecord.length")
    body = handle.read(length + FOOTER_BYTES)
    if len(body) < length + FOOTER_BYTES:
        raise SourceError(path, f"truncated file: record at byte {span.offset} needs {length + FOOTER_BYTES} bytes "
                          f"after its header, {len(body)} remain", episode, "tfrecord.data")
    data = body[:length]
    (data_crc,) = struct.unpack("<I", body[length:])
    if masked_crc32c(data) != data_crc:
        raise SourceError(path, f"bad CRC of the record data at byte {span.offset}", episode, "tfrecord.data")
    return data
