"""The ROS mapping config: which topic is which camera, state, action or extra, on which clock, at which rate.

Given as the ``mapping`` option (a dict, or a path to a YAML/JSON file)::

    rate: 30                      # control rate in Hz ("30000/1001" works); or
    rate_topic: /joint_states     # one step per message of this topic
    clock: log_time               # log_time | header (the message's header stamp); per stream too
    tolerance_ms: 40              # default tolerance of asof/nearest streams (default: one period)
    split: {by: file}             # file | topic (topic: /marker, field: data) | gap (gap_s: 1.0)
    cameras:
      front: {topic: /cam/front/compressed, tolerance_ms: 20, bgr: false}
    state:
      - {topic: /joint_states, field: position, joints: [j1, j2], policy: asof, tolerance_ms: 25}
    action:
      - {topic: /command, field: data, policy: hold}
    extras:
      - {topic: /wrench, field: wrench.force, name: force, policy: nearest}
    task: {topic: /instruction, field: data}   # or a fixed string
    embodiment: franka

Without a mapping, image topics become cameras, JointState topics the state and topics named
``*action*`` the action, with one step per message of the first state topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import fsspec
import yaml

from connectors.base import DatasetError
from connectors.common import camera_name
from schemas import parse_rate

POLICIES = ("hold", "asof", "nearest")
CLOCKS = ("log_time", "header")
SPLITS = ("file", "topic", "gap")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "foxglove.CompressedImage",
               "foxglove.RawImage", "sensor_msgs/Image", "sensor_msgs/CompressedImage")
JOINT_STATE_TYPES = ("sensor_msgs/msg/JointState", "sensor_msgs/JointState")
_GENERIC_PARTS = {"image_raw", "compressed", "image", "image_rect", "image_rect_color", "color", "raw"}


@dataclass(frozen=True)
class StreamSpec:
    """A numeric stream: a field of a topic's messages, resampled onto the control ticks."""

    topic: str
    field: str = ""  # dotted path; "" picks the type's natural field (JointState: position)
    name: str = ""
    joints: tuple[str, ...] = ()  # JointState: pick and order these joints by name
    names: tuple[str, ...] = ()  # per-dimension names
    policy: str = "asof"
    tolerance_ms: float | None = None
    clock: str | None = None
    stamp_field: str = ""  # header clock for messages without header.stamp (JSON "timestamp")


@dataclass(frozen=True)
class CameraSpec:
    name: str
    topic: str
    tolerance_ms: float | None = None
    clock: str | None = None
    bgr: bool = False
    stamp_field: str = ""


@dataclass(frozen=True)
class SplitSpec:
    by: str = "file"
    topic: str = ""
    field: str = ""
    gap_s: float = 1.0


@dataclass(frozen=True)
class Mapping:
    rate: Fraction | None = None
    rate_topic: str = ""
    clock: str = "log_time"
    tolerance_ms: float | None = None
    split: SplitSpec = field(default_factory=SplitSpec)
    cameras: tuple[CameraSpec, ...] = ()
    state: tuple[StreamSpec, ...] = ()
    action: tuple[StreamSpec, ...] = ()
    extras: tuple[StreamSpec, ...] = ()
    task: StreamSpec | None = None
    task_text: str = ""
    embodiment: str = ""
    auto: bool = False

    def topics(self) -> list[str]:
        streams = [*self.state, *self.action, *self.extras, *([self.task] if self.task else [])]
        return sorted({s.topic for s in streams} | {c.topic for c in self.cameras})


def load_mapping_doc(value: Any) -> dict | None:
    """The mapping option as a dict: given inline, or read from a YAML/JSON file path."""
    if value is None or isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise DatasetError(str(value), "the mapping option must be a dict or a path to a YAML/JSON file")
    try:
        with fsspec.open(value, "r") as handle:
            text = handle.read(4 * 1024 * 1024)
    except OSError as exc:
        raise DatasetError(value, f"cannot read the mapping file: {exc}") from exc
    try:
        doc = json.loads(text) if value.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(value, f"invalid mapping file: {exc}") from exc
    if not isinstance(doc, dict):
        raise DatasetError(value, "the mapping file must hold a mapping (YAML object)")
    return doc


def parse_mapping(doc: dict, where: str = "mapping") -> Mapping:
    """Validate a mapping document; errors name the offending key."""
    known = {"rate", "rate_topic", "clock", "tolerance_ms", "split", "cameras", "state", "action", "extras", "task",
             "embodiment"}
    unknown = set(doc) - known
    if unknown:
        raise DatasetError(where, f"unknown mapping keys {sorted(unknown)} (known: {sorted(known)})")
    clock = _choice(doc.get("clock", "log_time"), CLOCKS, where, "clock")
    split_doc = doc.get("split") or {}
    if isinstance(split_doc, str):
        split_doc = {"by": split_doc}
    split = SplitSpec(by=_choice(split_doc.get("by", "file"), SPLITS, where, "split.by"),
                      topic=str(split_doc.get("topic", "")), field=str(split_doc.get("field", "")),
                      gap_s=float(split_doc.get("gap_s", 1.0)))
    if split.by == "topic" and not split.topic:
        raise DatasetError(where, "split.by: topic needs split.topic")
    try:
        rate = parse_rate(doc["rate"]) if doc.get("rate") is not None else None
    except ValueError as exc:
        raise DatasetError(where, f"rate: {exc}") from exc
    task = doc.get("task")
    return Mapping(
        rate=rate, rate_topic=str(doc.get("rate_topic", "")), clock=clock,
        tolerance_ms=_number(doc.get("tolerance_ms"), where, "tolerance_ms"), split=split,
        cameras=tuple(_cameras(doc.get("cameras") or {}, where)),
        state=tuple(_streams(doc.get("state") or [], where, "state")),
        action=tuple(_streams(doc.get("action") or [], where, "action")),
        extras=tuple(_streams(doc.get("extras") or [], where, "extras")),
        task=_stream(task, where, "task") if isinstance(task, dict) else None,
        task_text=task if isinstance(task, str) else "", embodiment=str(doc.get("embodiment", "")))


def auto_mapping(topics: dict[str, str]) -> Mapping:
    """A mapping guessed from topic types, for bags recorded with the usual message types."""
    cameras, used = [], set()
    for topic, msgtype in sorted(topics.items()):
        if msgtype in IMAGE_TYPES:
            parts = [p for p in topic.split("/") if p and p not in _GENERIC_PARTS]
            cameras.append(CameraSpec(name=camera_name("_".join(parts) or "camera", used), topic=topic))
    state = [StreamSpec(topic=t, field="position") for t, m in sorted(topics.items()) if m in JOINT_STATE_TYPES
             and "action" not in t and "command" not in t]
    action = [StreamSpec(topic=t, field="position" if m in JOINT_STATE_TYPES else "data")
              for t, m in sorted(topics.items()) if "action" in t.rsplit("/", 1)[-1] and m not in IMAGE_TYPES]
    return Mapping(rate_topic=state[0].topic if state else "", cameras=tuple(cameras), state=tuple(state),
                   action=tuple(action), auto=True)


def _choice(value: Any, allowed: tuple[str, ...], where: str, key: str) -> str:
    if value not in allowed:
        raise DatasetError(where, f"{key} must be one of {list(allowed)}, got {value!r}")
    return value


def _number(value: Any, where: str, key: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or value < 0:
        raise DatasetError(where, f"{key} must be a non-negative number, got {value!r}")
    return float(value)


def _cameras(doc: Any, where: str) -> list[CameraSpec]:
    items = doc.items() if isinstance(doc, dict) else [(c.get("name", ""), c) for c in doc]
    cameras, used = [], set()
    for name, spec in items:
        if isinstance(spec, str):
            spec = {"topic": spec}
        if not isinstance(spec, dict) or "topic" not in spec:
            raise DatasetError(where, f"camera {name!r} needs a topic")
        cameras.append(CameraSpec(name=camera_name(str(name) or spec["topic"], used), topic=str(spec["topic"]),
                                  tolerance_ms=_number(spec.get("tolerance_ms"), where, f"cameras.{name}.tolerance_ms"),
                                  clock=_choice(spec["clock"], CLOCKS, where, f"cameras.{name}.clock")
                                  if spec.get("clock") else None,
                                  bgr=bool(spec.get("bgr", False)), stamp_field=str(spec.get("stamp_field", ""))))
    return cameras


def _streams(doc: Any, where: str, group: str) -> list[StreamSpec]:
    if isinstance(doc, dict):
        doc = [doc]
    return [_stream(item, where, f"{group}[{i}]") for i, item in enumerate(doc)]


def _stream(doc: Any, where: str, key: str) -> StreamSpec:
    if isinstance(doc, str):
        doc = {"topic": doc}
    if not isinstance(doc, dict) or not doc.get("topic"):
        raise DatasetError(where, f"{key} needs a topic")
    return StreamSpec(topic=str(doc["topic"]), field=str(doc.get("field", "")), name=str(doc.get("name", "")),
                      joints=tuple(str(j) for j in doc.get("joints") or ()),
                      names=tuple(str(n) for n in doc.get("names") or ()),
                      policy=_choice(doc.get("policy", "asof"), POLICIES, where, f"{key}.policy"),
                      tolerance_ms=_number(doc.get("tolerance_ms"), where, f"{key}.tolerance_ms"),
                      clock=_choice(doc["clock"], CLOCKS, where, f"{key}.clock") if doc.get("clock") else None,
                      stamp_field=str(doc.get("stamp_field", "")))
