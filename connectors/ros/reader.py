"""One ROS episode (a bag, or a time window of one) resampled onto control ticks.

Every mapped stream is read once, on its clock (log time or header stamp), then resampled onto
the ticks with its policy (``connectors.ros.resample``). Cameras keep every frame of the window
and get a step -> frame alignment (nearest within the tolerance, -1 beyond); their pixels are
decoded lazily in a second pass when the store encodes them (JPEG CompressedImage payloads are
also offered as they are, for the store to keep without decoding).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from connectors.base import EpisodeRef, SourceError
from connectors.common import (
    build_meta,
    check_dims,
    concat_columns,
    estimate_rate,
    frame_sequence,
    task_table,
    vector_names,
)
from connectors.ros.bags import Bag, Raw
from connectors.ros.config import CameraSpec, Mapping, StreamSpec
from connectors.ros.fields import (
    FieldError,
    compressed_codec,
    decode_ros_image,
    default_field,
    get_path,
    image_payload,
    joint_values,
    stamp_ns,
    to_vector,
)
from connectors.ros.resample import fixed_ticks, resample
from schemas import NS_PER_S, CameraInfo, Episode, StepArrays, align_nearest, period_ns

MAX_METADATA_CHARS = 4096
MAX_KEPT_IMAGE_BYTES = 256 * 1024 * 1024  # image payloads kept from the first pass; beyond, frames are re-read


@dataclass
class _Frames:
    """A camera's frames in the first pass: times on its clock and, within a memory budget, the payloads."""

    topic: str
    bgr: bool
    times: list[int] = field(default_factory=list)
    payloads: list | None = field(default_factory=list)
    first_log: int = 0
    shape: tuple = ()
    jpeg: bool = False  # CompressedImage JPEGs: offered to the store as they are (with the camera's bgr quirk)


def _decoded(message):
    return message.decode() if isinstance(message, Raw) else message


def _payload_bytes(message) -> int:
    if isinstance(message, Raw):
        return len(message.data)
    data = message.get("data") if isinstance(message, dict) else getattr(message, "data", b"")
    return len(data) if hasattr(data, "__len__") else 0


@dataclass
class _Series:
    """Samples of one stream in arrival order: times on the stream's clock, and values."""

    times: list[int] = field(default_factory=list)
    values: list = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def read_ros_episode(bag: Bag, mapping: Mapping, ref: EpisodeRef, window: tuple[int, int] | None) -> Episode:
    options = ref.options
    episode = ref.key
    topics = bag.topics()
    for topic in mapping.topics() + ([mapping.rate_topic] if mapping.rate_topic else []):
        if topic not in topics:
            raise SourceError(bag.path, f"missing topic {topic!r} (the bag has {sorted(topics)})", episode, topic)
    streams = [*mapping.state, *mapping.action, *mapping.extras, *([mapping.task] if mapping.task else [])]
    series, frames, tick_times = _first_pass(bag, mapping, streams, topics, window, episode)
    ticks, fps = _ticks(mapping, series, tick_times, bag.path, episode)
    n = int(ticks.shape[0])
    state, state_names, state_valid, state_extras = _group(mapping.state, series, ticks, mapping, fps, bag, episode)
    action, action_names, action_valid, action_extras = _group(mapping.action, series, ticks, mapping, fps, bag,
                                                               episode)
    step_extras = {**state_extras, **action_extras}
    for spec in mapping.extras:
        values, _, valid = _resampled(spec, series[_key(spec)], ticks, mapping, fps, bag, episode)
        label = spec.name or _label(spec)
        step_extras[label] = values[:, 0] if values.shape[1] == 1 else values
        step_extras[f"valid.{label}"] = valid
    tasks, task_index = _tasks(mapping, series, ticks, n)
    cameras, videos, frame_index = _cameras(bag, mapping, frames, ticks, fps, window, episode)
    extras = _meta_extras(bag, mapping, window, fps)
    meta = build_meta(ref_dataset=ref.dataset, ref_key=ref.key, ref_uri=ref.uri, source_format="ros", options=options,
                      fps=fps, num_steps=n, state=state, state_names=state_names, action=action,
                      action_names=action_names, embodiment=mapping.embodiment or "unknown", tasks=tasks,
                      extras=extras, success=_success(extras),
                      duration_ns=int(ticks[-1] - ticks[0]) + period_ns(fps))
    meta.cameras = cameras
    steps = StepArrays(timestamp_ns=(ticks - ticks[0]).astype(np.int64), state=state, action=action,
                       frame_index=frame_index, task_index=task_index, state_valid=state_valid,
                       action_valid=action_valid, extras=step_extras)
    return Episode(meta=meta, steps=steps, videos=videos)


def _key(spec: StreamSpec) -> tuple:
    return spec.topic, spec.field, spec.joints, spec.clock, spec.stamp_field


def _label(spec: StreamSpec) -> str:
    return spec.name or "_".join(p for p in (spec.topic.strip("/").replace("/", "_"), spec.field.replace(".", "_"))
                                 if p)


def _clock_time(message, log_time: int, clock: str, stamp_field: str, where: str, episode: str, topic: str) -> int:
    if clock == "log_time":
        return log_time
    try:
        return stamp_ns(message, stamp_field)
    except FieldError as exc:
        raise SourceError(where, f"header clock: {exc}", episode, topic) from exc


def _first_pass(bag: Bag, mapping: Mapping, streams: list[StreamSpec], msgtypes: dict[str, str], window, episode):
    """Stream samples, camera frame times (+ the first frame's size) and rate-topic times, in one read."""
    by_topic: dict[str, list[StreamSpec]] = {}
    for spec in streams:
        by_topic.setdefault(spec.topic, []).append(spec)
    cameras = {c.topic: c for c in mapping.cameras}
    series = {_key(s): _Series() for s in streams}
    frames = {c.name: _Frames(c.topic, c.bgr) for c in mapping.cameras}
    kept_bytes = 0
    tick_times: list[int] = []
    topics = sorted(set(by_topic) | set(cameras) | ({mapping.rate_topic} if mapping.rate_topic else set()))
    rate_spec = next((s for s in streams if s.topic == mapping.rate_topic), StreamSpec(topic=mapping.rate_topic))
    start, end = window if window else (None, None)
    # Image payloads are only needed when their header stamp is the clock; geometry comes from one frame later.
    decode = set(by_topic) | {mapping.rate_topic} | {c.topic for c in mapping.cameras
                                                     if (c.clock or mapping.clock) == "header"}
    for topic, log_time, message in bag.messages(topics, start, end, decode=decode):
        if topic == mapping.rate_topic:
            tick_times.append(_clock_time(message, log_time, rate_spec.clock or mapping.clock, rate_spec.stamp_field,
                                          bag.path, episode, topic))
        for spec in by_topic.get(topic, ()):
            clock = spec.clock or mapping.clock
            when = _clock_time(message, log_time, clock, spec.stamp_field, bag.path, episode, topic)
            _append(series[_key(spec)], spec, message, when, msgtypes.get(topic, ""), bag.path, episode)
        camera = cameras.get(topic)
        if camera is not None:
            when = _clock_time(message, log_time, camera.clock or mapping.clock, camera.stamp_field, bag.path,
                               episode, topic)
            record = frames[camera.name]
            if not record.times:
                record.first_log = log_time
            record.times.append(when)
            if record.payloads is not None:
                kept_bytes += _payload_bytes(message)
                record.payloads.append(message)
                if kept_bytes > MAX_KEPT_IMAGE_BYTES:
                    for other in frames.values():
                        other.payloads = None
    for record in frames.values():
        if record.times:
            first = record.payloads[0] if record.payloads else next(
                m for _, _, m in bag.messages([record.topic], record.first_log, record.first_log))
            record.shape = decode_ros_image(_decoded(first), bag.path, episode, record.topic, record.bgr).shape
            kind, _, height, _, _ = image_payload(_decoded(first))
            record.jpeg = height == 0 and compressed_codec(kind) == "jpeg"
    return series, frames, tick_times


def _append(series: _Series, spec: StreamSpec, message, when: int, msgtype: str, where: str, episode: str) -> None:
    field_path = spec.field or default_field(msgtype)
    label = f"{spec.topic}:{field_path}" if field_path else spec.topic
    try:
        if spec.joints:
            value = joint_values(message, field_path or "position", spec.joints)
        elif isinstance(get_path(message, field_path), str):
            value = get_path(message, field_path)
        else:
            value = to_vector(get_path(message, field_path))
    except FieldError as exc:
        raise SourceError(where, f"message {len(series.times)}: {exc}", episode, label) from exc
    if not series.times and not spec.names and not isinstance(value, str):
        series.names = _names(message, spec, len(value))
    if series.values and not isinstance(value, str) and len(value) != len(series.values[0]):
        raise SourceError(where, f"shape mismatch: message {len(series.times)} has {len(value)} values, the first had "
                          f"{len(series.values[0])}", episode, label)
    series.times.append(when)
    series.values.append(value)


def _names(message, spec: StreamSpec, width: int) -> list[str]:
    if spec.names and len(spec.names) == width:
        return list(spec.names)
    if spec.joints:
        return list(spec.joints)
    try:
        names = [str(n) for n in get_path(message, "name")]
    except FieldError:
        names = []
    if len(names) == width and (spec.field or "position") in ("position", "velocity", "effort"):
        return names if spec.field in ("", "position") else [f"{n}.{spec.field}" for n in names]
    return vector_names(_label(spec), width)


def _ticks(mapping: Mapping, series: dict, tick_times: list[int], where: str, episode: str):
    """Fixed-rate ticks over the span of the state/action samples, or one tick per rate-topic message."""
    if mapping.rate_topic:
        ticks = np.sort(np.asarray(tick_times, dtype=np.int64))
        if ticks.size == 0:
            raise SourceError(where, "no messages on the rate topic in this episode", episode, mapping.rate_topic)
        if np.any(np.diff(ticks) <= 0):
            raise SourceError(where, "two rate-topic messages share a time: steps would not advance", episode,
                              mapping.rate_topic)
        if mapping.rate is not None:
            return ticks, mapping.rate
        median = float(np.median(np.diff(ticks))) if ticks.size > 1 else float(NS_PER_S)
        return ticks, estimate_rate(median)
    if mapping.rate is None:
        raise SourceError(where, "the mapping needs a rate or a rate_topic", episode, "rate")
    core = [series[_key(s)].times for s in [*mapping.state, *mapping.action] if series[_key(s)].times]
    times = core or [v.times for v in series.values() if v.times]
    if not times:
        raise SourceError(where, "no messages on any mapped topic in this episode", episode, "topics")
    return fixed_ticks(min(min(t) for t in times), max(max(t) for t in times), mapping.rate), mapping.rate


def _tolerance_ns(spec_ms: float | None, mapping: Mapping, fps: Fraction) -> int:
    value = spec_ms if spec_ms is not None else mapping.tolerance_ms
    return round(value * 1_000_000) if value is not None else period_ns(fps)


def _resampled(spec: StreamSpec, series: _Series, ticks: np.ndarray, mapping: Mapping, fps: Fraction, bag: Bag,
               episode: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    if not series.times:
        raise SourceError(bag.path, "no messages in this episode", episode, spec.topic)
    times = np.asarray(series.times, dtype=np.int64)
    order = np.argsort(times, kind="stable")
    values = np.asarray(series.values, dtype=np.float64)[order]
    out, valid = resample(times[order], values, ticks, spec.policy, _tolerance_ns(spec.tolerance_ms, mapping, fps))
    return out, series.names, valid


def _group(specs, series, ticks, mapping, fps, bag, episode):
    """State or action: the streams side by side, valid where every stream is."""
    n = ticks.shape[0]
    parts, valids, extras = [], [], {}
    for spec in specs:
        values, names, valid = _resampled(spec, series[_key(spec)], ticks, mapping, fps, bag, episode)
        parts.append((spec.topic, values, names))
        valids.append(valid)
        if len(specs) > 1:
            extras[f"valid.{_label(spec)}"] = valid
    values, names = concat_columns(parts, n)
    valid = np.logical_and.reduce(valids) if valids else np.zeros(n, bool)
    return values, names, valid, extras


def _tasks(mapping: Mapping, series, ticks: np.ndarray, n: int) -> tuple[list[str], np.ndarray]:
    if mapping.task_text:
        return [mapping.task_text], np.zeros(n, np.int32)
    if mapping.task is None:
        return [], np.full(n, -1, np.int32)
    data = series[_key(mapping.task)]
    times = np.asarray(data.times, dtype=np.int64)
    index = np.searchsorted(times, ticks, side="right") - 1 if times.size else np.full(n, -1)
    return task_table([str(data.values[i]) if i >= 0 else None for i in index])


def _cameras(bag: Bag, mapping: Mapping, frames: dict, ticks: np.ndarray, fps: Fraction, window, episode: str):
    cameras, videos, frame_index = [], {}, {}
    for spec in mapping.cameras:
        record = frames[spec.name]
        if not record.times:
            raise SourceError(bag.path, "no image messages in this episode", episode, spec.topic)
        times = np.asarray(record.times, dtype=np.int64)
        if np.any(np.diff(times) < 0):
            raise SourceError(bag.path, "frame stamps go backwards on this clock", episode, spec.topic)
        height, width = int(record.shape[0]), int(record.shape[1])
        check_dims(height, width, bag.path, episode, spec.topic)
        interval = int(np.median(np.diff(times))) if times.size > 1 else period_ns(fps)
        camera_fps = estimate_rate(interval)
        tolerance = (round(spec.tolerance_ms * 1_000_000) if spec.tolerance_ms is not None
                     else max(period_ns(fps), interval) // 2)
        frame_index[spec.name] = align_nearest(ticks, times, tolerance)
        cameras.append(CameraInfo(name=spec.name, width=width, height=height, fps=camera_fps, codec="",
                                  num_frames=int(times.size), source_key=spec.topic))
        messages = _messages(bag, spec, window, record.payloads)
        jpeg = (lambda messages=messages: (image_payload(m)[1] for m in messages())) if record.jpeg else None
        videos[spec.name] = frame_sequence(_frames(bag, spec, episode, messages), int(times.size), camera_fps,
                                           height, width, bag.path, episode, spec.topic, jpeg=jpeg,
                                           jpeg_bgr=spec.bgr)
    return cameras, videos, frame_index


def _messages(bag: Bag, spec: CameraSpec, window, payloads: list | None):
    """A camera's messages from the payloads kept in the first pass, or (over the memory budget) a second read."""

    def messages() -> Iterator:
        if payloads is not None:
            return (_decoded(p) for p in payloads)
        start, end = window if window else (None, None)
        return (m for _, _, m in bag.messages([spec.topic], start, end))

    return messages


def _frames(bag: Bag, spec: CameraSpec, episode: str, messages):
    def produce() -> Iterator[np.ndarray]:
        for message in messages():
            yield decode_ros_image(message, bag.path, episode, spec.topic, spec.bgr)

    return produce


def _meta_extras(bag: Bag, mapping: Mapping, window, fps: Fraction) -> dict[str, str]:
    extras = {"ros.bag": bag.path.rsplit("/", 1)[-1], "ros.clock": mapping.clock,
              "ros.rate": f"topic {mapping.rate_topic}" if mapping.rate_topic else f"{fps} Hz"}
    if window:
        extras["ros.window_ns"] = f"{window[0]}:{window[1]}"
    if mapping.auto:
        extras["ros.mapping"] = "auto"
    for name, values in bag.metadata().items():
        for key, value in values.items():
            extras[f"ros.metadata.{name}.{key}"] = str(value)[:MAX_METADATA_CHARS]
    return extras


def _success(extras: dict[str, str]) -> bool | None:
    for key, value in extras.items():
        if key.endswith(".success") and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
    return None
