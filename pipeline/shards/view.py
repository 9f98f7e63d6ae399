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
RESIZE_MODES = ("stretch", "pad", "crop")  # stretch to size | letterbox, aspect kept | centre crop
FRAME_CODECS = ("jpg", "png", "npy", "mp4")  # mp4: one video segment per sample and camera (video/segments.py)
VIDEO_CODECS = ("mp4",)
# swscale-ycbcr: JPEG members from swscale's YCbCr planes, no RGB frame (scale_to_jpeg_planes); other
# codecs take swscale's path. swscale: convert + resize the decoded picture to RGB in one pass
# (pipeline.video.resize.scale_frame); opencv: RGB frame first, then OpenCV INTER_AREA/INTER_LINEAR.
# The last two keep the bytes of views built before each newer one.
SCALERS = ("swscale-ycbcr", "swscale", "opencv")
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
    # actions stored past a segment's end so a chunk this long reads one sample (ACT's default chunk is 100);
    # longer windows read the next segments (pipeline.loaders.offsets). Cost: docs/loaders.md.
    max_action_horizon: int = 100
    target_shard_bytes: int = 1 << 30
    min_shards: int = 1
    estimated_bytes_per_pixel: float = 0.15  # for planning only: a 224x224 JPEG at q95 is about 7-10 KB
    resize: str = "stretch"  # how a frame of another aspect ratio reaches height x width (shards/images.py)
    pad_value: int = 0  # the letterbox fill of resize="pad", every channel
    # mp4 segments encoded at the view's size: libx264 quality and chroma. 4:4:4 at crf 10 keeps the JPEG
    # view's >= 40 dB at ~1/15 of its bytes (4:2:0 fell to 37 dB on saturated edges; NVDEC decodes 4:2:0 only)
    video_crf: int = 10
    video_pix_fmt: str = "yuv444p"
    video_passthrough: bool = True  # mp4 at the source's own size: cut the source's packets, no re-encode
    # pictures per GOP of an encoded segment (0: one GOP, its first picture the only keyframe): a loader
    # reading one step decodes from the keyframe before it, so short GOPs serve random access
    video_gop: int = 0
    scaler: str = "swscale-ycbcr"  # CPU resize engine (SCALERS): it changes the bytes, so it is part of the identity
    decoder: str = field(default="auto", compare=False)  # "auto": routed per video; else a backend name
    # Named step extras stored per sample as ``extra.<name>.npy`` (e.g. Cosmos' continuous_gripper_state).
    step_extras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.jpeg_subsampling not in JPEG_SUBSAMPLING:
            raise ValueError(f"jpeg_subsampling must be one of {sorted(JPEG_SUBSAMPLING)}")
        if self.frame_codec not in FRAME_CODECS:
            raise ValueError(f"frame_codec must be one of {FRAME_CODECS}, got {self.frame_codec!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if not 0 <= self.pad_value <= 255:
            raise ValueError("pad_value must be in [0, 255]")
        if self.video_pix_fmt not in ("yuv444p", "yuv420p"):
            raise ValueError(f"video_pix_fmt must be yuv444p or yuv420p, got {self.video_pix_fmt!r}")
        if self.video_gop < 0:
            raise ValueError(f"video_gop must be >= 0 (0: one GOP per segment), got {self.video_gop}")
        if self.scaler not in SCALERS:
            raise ValueError(f"scaler must be one of {SCALERS}, got {self.scaler!r}")
        if min(self.height, self.width, self.segment_steps, self.max_action_horizon, self.min_shards) < 1:
            raise ValueError("height, width, segment_steps, max_action_horizon and min_shards must be >= 1")

    def identity(self) -> dict:
        data = asdict(self)
        data.pop("decoder")
        if self.resize == "stretch":  # ids of views made before resize modes existed stay the same
            data.pop("resize")
        if self.scaler == "swscale-ycbcr" and (self.frame_codec != "jpg" or self.resize != "stretch"):
            data["scaler"] = "swscale"  # the same bytes as swscale's there: those views keep their ids
        if self.resize != "pad":
            data.pop("pad_value")
        if not self.video_gop:  # one GOP per segment, as views made before the option
            data.pop("video_gop")
        data["cameras"] = list(self.cameras) if self.cameras is not None else None
        if self.step_extras:
            data["step_extras"] = list(self.step_extras)
        else:
            data.pop("step_extras")  # views without extras keep the ids they had before extras existed
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
        data["step_extras"] = tuple(data.get("step_extras") or ())
        return ViewConfig(**data)
