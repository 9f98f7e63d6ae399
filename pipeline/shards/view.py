"""A view: how one version is materialized for training (cameras, size, codec, segments, shard size).

The view id hashes (version id, view config): it names the view manifest of that version. Shards
themselves are content-addressed by what they hold (``content_identity`` plus the exact segments
and episode content, see ``pipeline.shards.plan.shard_key``), so views of related versions share
every unchanged shard. The decoder backend is not part of either: it is an execution choice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

FRAME_CODECS = ("jpg", "png", "npy")
JPEG_SUBSAMPLING = {"444": 0x111111, "422": 0x211111, "420": 0x221111}
_PLANNING_ONLY = ("target_shard_bytes", "min_shards", "estimated_bytes_per_pixel")


@dataclass(frozen=True)
class ViewConfig:
    cameras: tuple[str, ...] | None = None  # None: every camera of each episode
    height: int = 224
    width: int = 224
    frame_codec: str = "jpg"
    jpeg_quality: int = 95
    # 4:4:4 keeps the chroma the source video decoded to: >= 43 dB on the real samples where 4:2:0 gave 39.9.
    jpeg_subsampling: str = "444"
    segment_steps: int = 64
    max_action_horizon: int = 64  # actions stored past a segment's end so any chunk of this length fits
    target_shard_bytes: int = 1 << 30
    min_shards: int = 1
    estimated_bytes_per_pixel: float = 0.15  # for planning only: a 224x224 JPEG at q95 is about 7-10 KB
    decoder: str = field(default="auto", compare=False)  # "auto": routed per video; else a backend name

    def __post_init__(self) -> None:
        if self.jpeg_subsampling not in JPEG_SUBSAMPLING:
            raise ValueError(f"jpeg_subsampling must be one of {sorted(JPEG_SUBSAMPLING)}")
        if self.frame_codec not in FRAME_CODECS:
            raise ValueError(f"frame_codec must be one of {FRAME_CODECS}, got {self.frame_codec!r}")
        if min(self.height, self.width, self.segment_steps, self.max_action_horizon, self.min_shards) < 1:
            raise ValueError("height, width, segment_steps, max_action_horizon and min_shards must be >= 1")

    def identity(self) -> dict:
        data = asdict(self)
        data.pop("decoder")
        data["cameras"] = list(self.cameras) if self.cameras is not None else None
        return data

    def content_identity(self) -> dict:
        """The fields that change a shard's bytes (sizing fields only decide how segments are grouped)."""
        return {k: v for k, v in self.identity().items() if k not in _PLANNING_ONLY}

    def view_id(self, version_id: str) -> str:
        text = json.dumps({"version": version_id, "view": self.identity()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @staticmethod
    def from_json(data: dict) -> ViewConfig:
        data = dict(data)
        if data.get("cameras") is not None:
            data["cameras"] = tuple(data["cameras"])
        return ViewConfig(**data)
