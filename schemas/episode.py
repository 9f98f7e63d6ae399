"""The unified episode model (schema v1): what every connector produces and every stage consumes.

An ``Episode`` is one recording: its catalog metadata (``EpisodeMeta``), its per-step arrays
(``StepArrays``) and, per camera, where its pixels come from (``VideoFile`` or ``FrameSequence``).
The Arrow form of the same contract lives in ``schemas.arrow``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from schemas.version import SCHEMA_VERSION

KINDS = frozenset({"teleop", "sim", "synthetic"})
ACTION_SPACES = frozenset(
    {"joint_pos", "joint_vel", "joint_torque", "eef_pose", "eef_delta", "eef_vel", "base_vel", "mixed",
     "latent", "unknown"}
)
ACTION_REPRESENTATIONS = frozenset({"absolute", "delta", "relative", "unknown"})
ROTATION_TYPES = frozenset({"", "quat_xyzw", "quat_wxyz", "euler_xyz", "axis_angle", "rot6d", "matrix"})
ACTION_SOURCES = frozenset(
    {"recorded", "derived_from_state", "inverse_dynamics", "latent_action", "commanded", "none"}
)
STATE_SOURCES = frozenset({"recorded", "estimated", "none"})
GENERATOR_TASKS = frozenset({"image2world", "video2world", "action2world", "transfer", "other"})
SPLITS = frozenset({"train", "val", "test"})
CHANNEL_ORDERS = ("rgb", "bgr")
NUMERIC_DTYPES = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8"})

# Keys end up in WebDataset sample keys and file names: no dots, no slashes.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def is_safe_name(name: str) -> bool:
    """True for identifiers usable in sample keys and object names (WebDataset splits keys at dots)."""
    return bool(_SAFE_NAME.match(name))


def safe_name(raw: str) -> str:
    """A safe identifier from an arbitrary source name (``observation.images.top`` -> ``top``)."""
    for prefix in ("observation.images.", "observation.image.", "observation/", "images/", "image_"):
        if raw.startswith(prefix) and len(raw) > len(prefix):
            raw = raw[len(prefix):]
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_-") or "x"
    return name[:128]


def make_episode_id(dataset: str, source_key: str) -> str:
    """Stable id of an episode: a readable dataset prefix plus a hash of (dataset, source key)."""
    digest = hashlib.blake2b(f"{dataset}\0{source_key}".encode(), digest_size=8).hexdigest()
    return f"{safe_name(dataset)[:40]}-{digest}"


@dataclass
class CameraInfo:
    """One camera stream of an episode, as stored."""

    name: str
    width: int
    height: int
    fps: Fraction
    codec: str
    num_frames: int
    pix_fmt: str = "yuv420p"
    source_key: str = ""
    video_path: str = ""  # store-relative object path, filled by the store
    video_sha256: str = ""
    video_bytes: int = 0
    frame_start: int = 0  # index of this episode's first frame inside the video object
    encoding: str = "source"  # "source": copied/remuxed as recorded; "encoded": encoded by ActionReel
    encode_params: str = ""
    # What a standard decoder returns from the stored video: "rgb", or "bgr" for source JPEGs kept as they
    # are that were encoded from RGB arrays as if BGR (ALOHA's recorder); the store's decoder swaps them back.
    channel_order: str = "rgb"


@dataclass
class GeneratorInfo:
    """The model that generated a synthetic episode and how it was called."""

    model_id: str = ""
    checkpoint_sha: str = ""
    task: str = "other"
    seed: int | None = None
    guidance: float | None = None
    num_steps: int | None = None
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class ConditioningInput:
    """An input a generator was conditioned on: frames of the parent or a control video."""

    kind: str  # frames | image | video | depth | edge | seg | vis | actions | other
    uri: str = ""
    frame_index: int | None = None
    weight: float | None = None


@dataclass
class LabelerInfo:
    """The model that produced actions or states (e.g. an inverse-dynamics model)."""

    model_id: str = ""
    checkpoint_sha: str = ""


@dataclass
class Lineage:
    """Where a synthetic or derived episode came from. ``None`` on teleop episodes."""

    parent_episode_id: str = ""
    parent_frame_range: tuple[int, int] | None = None
    root_episode_id: str = ""
    generator: GeneratorInfo | None = None
    prompt: str = ""
    conditioning: list[ConditioningInput] = field(default_factory=list)
    action_source: str = "recorded"
    labeler: LabelerInfo | None = None
    state_source: str = "recorded"


@dataclass
class EpisodeMeta:
    """One row of the episode catalog."""

    episode_id: str
    dataset: str
    source_format: str
    source_uri: str
    source_key: str
    source_checksum: str
    kind: str
    embodiment: str
    control_fps: Fraction
    num_steps: int
    state_names: list[str]
    action_names: list[str]
    state_dtype: str = "float32"
    action_dtype: str = "float32"
    action_space: str = "unknown"
    action_representation: str = "unknown"
    rotation_type: str = ""
    tasks: list[str] = field(default_factory=list)
    success: bool | None = None
    cameras: list[CameraInfo] = field(default_factory=list)
    split: str = "train"
    lineage: Lineage | None = None
    extras: dict[str, str] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    duration_ns: int = 0
    # Filled by the store when the episode is written.
    steps_path: str = ""
    steps_sha256: str = ""
    steps_bytes: int = 0

    @property
    def action_source(self) -> str:
        return self.lineage.action_source if self.lineage else "recorded"

    @property
    def state_source(self) -> str:
        return self.lineage.state_source if self.lineage else "recorded"

    def camera(self, name: str) -> CameraInfo:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"episode {self.episode_id} has no camera {name!r}")


@dataclass
class StepArrays:
    """Per-step columns of one episode. Lengths all equal ``num_steps``.

    ``frame_index[camera][t]`` is the index (from the episode's first frame of that camera) of the
    frame aligned to step ``t``, or -1 when no frame lies within the alignment tolerance.
    Missing values are masked by ``state_valid`` / ``action_valid`` and NaN rewards, never zeros.
    """

    timestamp_ns: np.ndarray
    state: np.ndarray
    action: np.ndarray
    frame_index: dict[str, np.ndarray] = field(default_factory=dict)
    task_index: np.ndarray | None = None
    reward: np.ndarray | None = None
    is_terminal: np.ndarray | None = None
    state_valid: np.ndarray | None = None
    action_valid: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(self.timestamp_ns.shape[0])

    def filled(self) -> StepArrays:
        """The same steps with every optional column materialized to its default."""
        n = self.num_steps
        return StepArrays(
            timestamp_ns=np.asarray(self.timestamp_ns, dtype=np.int64),
            state=self.state,
            action=self.action,
            frame_index={k: np.asarray(v, dtype=np.int32) for k, v in self.frame_index.items()},
            task_index=(np.full(n, -1, np.int32) if self.task_index is None
                        else np.asarray(self.task_index, dtype=np.int32)),
            reward=np.full(n, np.nan) if self.reward is None else np.asarray(self.reward, dtype=np.float64),
            is_terminal=(np.zeros(n, bool) if self.is_terminal is None
                         else np.asarray(self.is_terminal, dtype=bool)),
            state_valid=(np.ones(n, bool) if self.state_valid is None
                         else np.asarray(self.state_valid, dtype=bool)),
            action_valid=(np.ones(n, bool) if self.action_valid is None
                          else np.asarray(self.action_valid, dtype=bool)),
            extras=dict(self.extras),
        )


@dataclass
class VideoFile:
    """A camera's frames inside an encoded video file (copied or remuxed into the store as is)."""

    uri: str
    frame_start: int
    num_frames: int
    fps: Fraction
    exclusive: bool = True  # the file holds this episode only: its frame count must equal num_frames
    storage_options: dict = field(default_factory=dict)


@dataclass
class FrameSequence:
    """A camera's frames as decoded RGB images (HDF5 arrays, JPEG topics...), encoded by the store.

    ``frames`` is called once and yields ``num_frames`` HxWx3 uint8 RGB arrays in order.
    When the source already holds the frames compressed, ``encoded`` yields the same frames as those
    bytes (``encoded_codec``: "jpeg") without decoding them, and ``frames`` must decode exactly them
    (no change but the channel swap that ``encoded_channel_order`` "bgr" declares): the store may keep
    the bytes as they are, and decodes them to the same pixels. The store calls ``frames`` only when it
    cannot keep them (then with the reason).
    """

    frames: Callable[[], Iterator[np.ndarray]]
    num_frames: int
    fps: Fraction
    width: int
    height: int
    encoded: Callable[[], Iterator[bytes]] | None = None
    encoded_codec: str = ""
    encoded_channel_order: str = "rgb"  # "bgr": the bytes decode (by any standard decoder) to BGR of ``frames``


VideoSource = VideoFile | FrameSequence


@dataclass
class Episode:
    """A whole episode as read by a connector: metadata, steps and camera sources."""

    meta: EpisodeMeta
    steps: StepArrays
    videos: dict[str, VideoSource] = field(default_factory=dict)
