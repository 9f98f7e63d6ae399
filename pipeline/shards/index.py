"""The shard index: per sample, byte offsets of the sample and of each tar member.

Written beside each tar (``shard-000000.index.json``) and summarized in the view manifest
(``view.json``: per shard its sample and step counts), so a loader knows the exact epoch length
without listing anything and reads any member with one ranged read.

Format 2 adds each member's XXH3-64 checksum (``members: {suffix: [offset, size, "<16 hex>"]}``), which
loaders check on every read: a flipped byte in a shard is an error naming shard, member and sample, never
a wrong value. Raw (``.npy``) frame members also carry a split checksum as a fourth element
(``npy_split_checksum``): the loader reads such a frame's header and pixels into two buffers with one
``preadv`` (the pixels straight into the batch), and two one-shot hashes of those buffers cost about
half what one streaming hash over both does. Indexes without it fall back to the whole-member check.
Format 1 indexes (no checksums) are still read; their members are served unchecked and
``ShardIndex.checked`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import xxhash

INDEX_FORMAT = "actionreel.shard-index/2"
INDEX_FORMAT_V1 = "actionreel.shard-index/1"  # no member checksums
MEMBER_CHECKSUM = "xxh3_64"


def member_checksum(data: bytes | memoryview) -> str:
    """The checksum the index records for a member's bytes (XXH3-64, 16 hex digits)."""
    return xxhash.xxh3_64_hexdigest(data)


def npy_header_length(data: bytes | memoryview) -> int:
    """Bytes of the ``.npy`` header (magic, version, length field, header dict) at the start of ``data``."""
    if bytes(data[:6]) != b"\x93NUMPY" or len(data) < 12:
        raise ValueError("not a .npy member")
    if data[6] == 1:
        return 10 + int.from_bytes(data[8:10], "little")
    return 12 + int.from_bytes(data[8:12], "little")


def split_checksum(header: bytes | memoryview, body: bytes | memoryview) -> int:
    """XXH3-64 of ``body`` seeded with the XXH3-64 of ``header``: two one-shot hashes over two buffers."""
    return xxhash.xxh3_64_intdigest(body, seed=xxhash.xxh3_64_intdigest(header))


def npy_split_checksum(data: bytes | memoryview) -> int:
    """The split checksum of a ``.npy`` member: its header and its array bytes hashed apart."""
    view = memoryview(data)
    length = npy_header_length(view)
    return split_checksum(view[:length], view[length:])


VIEW_FORMAT = "actionreel.view/1"


@dataclass
class SampleEntry:
    key: str
    offset: int  # of the first member's tar header
    size: int  # through the end of the last member's padded data
    episode_id: str
    segment: int
    step_start: int
    num_steps: int
    num_action_steps: int
    members: dict[str, tuple[int, int]] = field(default_factory=dict)  # member suffix -> (data offset, size)
    checksums: dict[str, str] = field(default_factory=dict)  # member suffix -> member_checksum (format 2)
    split_checksums: dict[str, int] = field(default_factory=dict)  # raw frame suffix -> npy_split_checksum

    def to_json(self) -> dict:
        return {"key": self.key, "offset": self.offset, "size": self.size, "episode_id": self.episode_id,
                "segment": self.segment, "step_start": self.step_start, "num_steps": self.num_steps,
                "num_action_steps": self.num_action_steps,
                "members": {k: self._member_json(k, v) for k, v in self.members.items()}}

    def _member_json(self, suffix: str, location: tuple[int, int]) -> list:
        if suffix not in self.checksums:
            return list(location)
        if suffix not in self.split_checksums:
            return [*location, self.checksums[suffix]]
        return [*location, self.checksums[suffix], f"{self.split_checksums[suffix]:016x}"]

    @staticmethod
    def from_json(data: dict) -> SampleEntry:
        members = data["members"]
        return SampleEntry(str(data["key"]), int(data["offset"]), int(data["size"]), str(data["episode_id"]),
                           int(data["segment"]), int(data["step_start"]), int(data["num_steps"]),
                           int(data["num_action_steps"]),
                           {str(k): (int(v[0]), int(v[1])) for k, v in members.items()},
                           {str(k): str(v[2]) for k, v in members.items() if len(v) > 2},
                           {str(k): int(v[3], 16) for k, v in members.items() if len(v) > 3})


@dataclass
class ShardIndex:
    shard: str
    tar_path: str
    tar_sha256: str
    tar_bytes: int
    samples: list[SampleEntry]
    checked: bool = True  # False for format 1 indexes: no member checksums to check against

    @property
    def num_steps(self) -> int:
        return sum(s.num_steps for s in self.samples)

    def to_json(self) -> dict:
        if not self.checked:
            raise ValueError(f"shard {self.shard}: a format 1 index (no checksums) is never written again")
        return {"format": INDEX_FORMAT, "checksum": MEMBER_CHECKSUM, "shard": self.shard, "tar_path": self.tar_path,
                "tar_sha256": self.tar_sha256, "tar_bytes": self.tar_bytes,
                "samples": [s.to_json() for s in self.samples]}

    @staticmethod
    def from_json(data: dict) -> ShardIndex:
        fmt = data.get("format")
        if fmt not in (INDEX_FORMAT, INDEX_FORMAT_V1):
            raise ValueError(f"not a shard index (format {fmt!r})")
        if fmt == INDEX_FORMAT and data.get("checksum") != MEMBER_CHECKSUM:
            raise ValueError(f"shard index {data.get('shard')}: unknown member checksum {data.get('checksum')!r}")
        return ShardIndex(str(data["shard"]), str(data["tar_path"]), str(data["tar_sha256"]),
                          int(data["tar_bytes"]), [SampleEntry.from_json(s) for s in data["samples"]],
                          fmt == INDEX_FORMAT)


@dataclass
class ShardSummary:
    """One shard as the view manifest lists it.

    ``num_samples``, ``num_steps`` and ``episodes`` count live samples only: a view that reuses a
    shard holding episodes its version deleted or replaced lists those ids in ``excluded``, and
    loaders skip their samples (the shard itself is never rewritten).
    """

    name: str
    tar_path: str
    index_path: str
    tar_sha256: str
    tar_bytes: int
    num_samples: int
    num_steps: int
    episodes: list[str]
    index_sha256: str = ""
    excluded: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {**self.__dict__, "episodes": list(self.episodes), "excluded": sorted(self.excluded)}

    @staticmethod
    def from_json(data: dict) -> ShardSummary:
        return ShardSummary(**data)
