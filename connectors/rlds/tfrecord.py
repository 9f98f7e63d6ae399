"""TFRecord framing without TensorFlow: ``uint64 length | uint32 masked_crc(length) | data | uint32 masked_crc(data)``.

Both checksums are verified on every read (CRC-32C, masked as TensorFlow does), so a flipped bit
or a cut file is reported with the file, the record and which checksum failed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

import google_crc32c

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


def scan_records(handle: BinaryIO, path: str, size: int, max_bytes: int = MAX_RECORD_BYTES) -> tuple[list[RecordSpan],
                                                                                                     str]:
    """Offsets of every record from the headers alone (data is skipped, not read or checked).

    Returns the spans and, when the framing breaks, why scanning stopped. The broken record is
    still listed so that reading it fails with that reason (the episode is quarantined, not lost).
    """
    spans: list[RecordSpan] = []
    offset = 0
    while offset < size:
        index = len(spans)
        handle.seek(offset)
        header = handle.read(HEADER_BYTES)
        if len(header) < HEADER_BYTES:
            spans.append(RecordSpan(index, offset, None))
            return spans, f"record {index} at byte {offset}: truncated header ({len(header)} of 12 bytes)"
        length, length_crc = struct.unpack("<QI", header)
        if masked_crc32c(header[:8]) != length_crc or length > max_bytes:
            spans.append(RecordSpan(index, offset, None))
            return spans, f"record {index} at byte {offset}: bad length checksum, later records cannot be located"
        spans.append(RecordSpan(index, offset, length))
        offset += HEADER_BYTES + length + FOOTER_BYTES
    return spans, ""


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
