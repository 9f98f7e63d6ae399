"""Values out of decoded ROS messages: field paths, numeric vectors, header stamps and images.

Decoded messages come as objects (``mcap_ros2``, ``rosbags``) or dicts (JSON); a field path such as
``pose.position`` or ``data[2]`` works on both.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import cv2
import numpy as np

from connectors.base import SourceError
from connectors.common import decode_image, rgb_array

_INDEX = re.compile(r"^(?P<name>[^\[\]]*)((?:\[\d+\])*)$")
_MISSING = object()
_VECTOR_FIELDS = (("x", "y", "z", "w"), ("x", "y", "z"))
_COMPOUND = {"pose": ("position", "orientation"), "transform": ("translation", "rotation"),
             "twist": ("linear", "angular"), "wrench": ("force", "torque"), "accel": ("linear", "angular")}
_DEFAULT_FIELDS = {"JointState": "position", "PoseStamped": "pose", "Pose": "", "TwistStamped": "twist",
                   "Twist": "", "WrenchStamped": "wrench", "Float64MultiArray": "data", "Float32MultiArray": "data",
                   "Float64": "data", "Float32": "data", "Int32": "data", "Bool": "data", "String": "data",
                   "TransformStamped": "transform", "Odometry": "pose.pose"}
RAW_ENCODINGS = {"rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True), "mono8": (1, False),
                 "8UC1": (1, False), "8UC3": (3, True)}


class FieldError(ValueError):
    """A field path does not exist or holds no numbers; the caller adds file, episode and topic."""


def default_field(msgtype: str) -> str:
    return _DEFAULT_FIELDS.get(msgtype.replace("/msg/", "/").rsplit("/", 1)[-1].rsplit(".", 1)[-1], "")


def get_path(message: Any, path: str) -> Any:
    """The value at a dotted path with optional ``[i]`` indices; raises ``FieldError`` when absent."""
    value = message
    for part in [p for p in path.split(".") if p] if path else []:
        match = _INDEX.match(part)
        if not match:
            raise FieldError(f"bad field path component {part!r}")
        name = match.group("name")
        if name:
            value = value.get(name, _MISSING) if isinstance(value, dict) else getattr(value, name, _MISSING)
            if value is _MISSING:
                raise FieldError(f"no field {name!r} (path {path!r})")
        for index in re.findall(r"\[(\d+)\]", part):
            try:
                value = value[int(index)]
            except (IndexError, TypeError, KeyError) as exc:
                raise FieldError(f"index {index} out of range (path {path!r})") from exc
    return value


def to_vector(value: Any) -> np.ndarray:
    """Numbers, sequences of numbers, or geometry messages (points, quaternions, poses) as a 1-D array."""
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return np.asarray([value], dtype=np.float64)
    if isinstance(value, np.ndarray):
        return value.reshape(-1) if value.dtype.kind in "fiub" else _fail(value)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (bool, int, float, np.number)) for v in value):
            return np.asarray(value, dtype=np.float64)
        return np.concatenate([to_vector(v) for v in value]) if value else np.zeros(0)
    for key, parts in _COMPOUND.items():
        if _has(value, parts[0]) and _has(value, parts[1]):
            return np.concatenate([to_vector(get_path(value, p)) for p in parts])
        if _has(value, key):
            return to_vector(get_path(value, key))
    for names in _VECTOR_FIELDS:
        if all(_has(value, n) for n in names):
            return np.asarray([float(get_path(value, n)) for n in names], dtype=np.float64)
    return _fail(value)


def _fail(value: Any) -> np.ndarray:
    raise FieldError(f"holds no numbers ({type(value).__name__})")


def _has(value: Any, name: str) -> bool:
    return name in value if isinstance(value, dict) else hasattr(value, name)


def joint_values(message: Any, field: str, joints: tuple[str, ...]) -> np.ndarray:
    """A JointState field ordered by joint name (recorders do not keep joint order stable)."""
    names = [str(n) for n in get_path(message, "name")]
    values = to_vector(get_path(message, field))
    if len(values) != len(names):
        raise FieldError(f"{len(values)} values for {len(names)} joint names")
    where = {n: i for i, n in enumerate(names)}
    missing = [j for j in joints if j not in where]
    if missing:
        raise FieldError(f"joints {missing} are not in this message ({names})")
    return values[[where[j] for j in joints]]


def stamp_ns(message: Any, stamp_field: str = "") -> int:
    """The message's own time: ``header.stamp`` (ROS), or a stamp field (``timestamp`` in JSON recorders)."""
    paths = [stamp_field] if stamp_field else ["header.stamp", "timestamp", "stamp"]
    for path in paths:
        try:
            value = get_path(message, path)
        except FieldError:
            continue
        return _time_value(value)
    raise FieldError(f"no header stamp (tried {paths})")


def _time_value(value: Any) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return round(value * 1_000_000_000)
    sec = _first(value, ("sec", "secs"))
    nsec = _first(value, ("nanosec", "nsec", "nsecs"))
    if sec is None or nsec is None:
        raise FieldError(f"a stamp needs sec and nanosec, got {type(value).__name__}")
    return int(sec) * 1_000_000_000 + int(nsec)


def _first(value: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        try:
            return get_path(value, name)
        except FieldError:
            continue
    return None


def image_payload(message: Any) -> tuple[str, bytes, int, int, int]:
    """(format or encoding, bytes, height, width, step) of an Image / CompressedImage message."""
    data = get_path(message, "data")
    if isinstance(data, str):  # JSON encodes bytes as base64
        data = base64.b64decode(data)
    elif isinstance(data, np.ndarray):
        data = data.tobytes()
    elif isinstance(data, list):
        data = bytes(data)
    if _has(message, "format"):
        return str(get_path(message, "format")), bytes(data), 0, 0, 0
    return (str(get_path(message, "encoding")), bytes(data), int(get_path(message, "height")),
            int(get_path(message, "width")), int(get_path(message, "step")))


def compressed_codec(fmt: str) -> str:
    """The codec of a CompressedImage ``format`` ("jpeg", "png", "rgb8; jpeg compressed bgr8", "h264"...)."""
    text = fmt.lower()
    if "compresseddepth" in text:
        return "compressedDepth"
    for codec in ("jpeg", "jpg", "png", "webp", "bmp", "tiff"):
        if codec in text:
            return "jpeg" if codec == "jpg" else codec
    return text.strip() or ""


def decode_ros_image(message: Any, path: str, episode: str, field: str, bgr: bool) -> np.ndarray:
    """An Image or CompressedImage message to RGB uint8 HxWx3; unknown encodings are named in the error."""
    kind, data, height, width, step = image_payload(message)
    if height == 0:  # CompressedImage: the codec comes from ``format``, else from the bytes
        return decode_image(data, path, episode, field, bgr=bgr, codec=compressed_codec(kind) or None)
    if kind not in RAW_ENCODINGS:
        raise SourceError(path, f"unknown image encoding {kind!r} (supported: {sorted(RAW_ENCODINGS)})", episode,
                          field)
    channels, is_bgr = RAW_ENCODINGS[kind]
    if step < width * channels or len(data) < step * height:
        raise SourceError(path, f"shape mismatch: {len(data)} bytes for a {width}x{height} {kind} image with step "
                          f"{step}", episode, field)
    rows = np.frombuffer(data, np.uint8)[:step * height].reshape(height, step)[:, :width * channels]
    image = rows.reshape(height, width, channels)
    if channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR if is_bgr else cv2.COLOR_RGBA2RGB)
        channels = 3
    return rgb_array(image, path, episode, field, bgr=is_bgr != bgr)
