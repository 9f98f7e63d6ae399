"""DreamGen datasets (GR00T-Dreams ``IDM_dump`` output): generated videos whose actions an IDM labelled.

Read through the LeRobot connector, then made honest about what they are: ``kind = synthetic``,
``action_source = inverse_dynamics``, the placeholder state masked (``state_source = none``, values
kept but never counted), the ``<DREAM>`` task prefix moved out of the instruction into extras, and
the labeler and generator recorded when the options name them.

GR00T-Dreams' scripts (``raw_to_lerobot.py``, ``dump_idm_actions.py``) write a LeRobot-like layout
with quirks, each handled here rather than refused:

- ``meta/info.json`` has no ``codebase_version``: read as v2.1 (per-episode files and jsonl tables).
- ``fps: 8`` beside ``timestamp = i/16`` and 16 fps videos: when the timestamps (and the videos, if
  they say) agree on another rate than info.json, that rate is the control rate; the declared one
  is kept in extras.
- ``features`` declare ``observation.state`` / ``action`` as ``[44]`` for every robot while the IDM
  action is as wide as the embodiment's action groups (44 gr1, 6 so100, 12 robocasa) and stored as
  ``list<double>``: the width comes from the data (the disagreement is a warning), names from
  ``meta/modality.json`` when its groups cover that width.
- ``annotation.<source>`` columns are ``list<int64>`` (``[[task]]``): read as per-step task indices.
- ``robot_type`` is "dream" for every robot: the embodiment is the ``embodiment`` option, else the
  one whose GR00T-Dreams metadata ``meta/modality.json`` copies, else the folder's ``<embodiment>.``
  prefix (as ``dump_idm_actions.py`` reads it), else ``robot_type`` with a warning.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import replace
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.base import DatasetError, Discovery, EpisodeRef, SourceError
from connectors.fsutil import read_json
from connectors.lerobot import LeRobotConnector
from connectors.lerobot.layout import Layout, load_layout
from connectors.lerobot.reader import GR00T_INSTRUCTION, read_episode
from schemas import Episode, GeneratorInfo, LabelerInfo, Lineage, fixed_list_to_numpy, parse_rate, safe_name

DREAM_PREFIX = "<DREAM>"
DREAM_LAYOUT = "v2.1"  # what GR00T-Dreams writes, though its info.json names no codebase_version
_LEROBOT = LeRobotConnector()
# GR00T-Dreams IDM_dump/global_metadata/<embodiment>/modality.json: action groups -> embodiment tag.
EMBODIMENT_ACTION_GROUPS = {
    "gr1_unified": ("left_arm", "left_hand", "left_leg", "neck", "right_arm", "right_hand", "right_leg", "waist"),
    "so100": ("main_shoulder_pan", "main_shoulder_lift", "main_elbow_flex", "main_wrist_flex", "main_wrist_roll",
              "main_gripper"),
    "robocasa_panda_omron": ("base_motion", "control_mode", "end_effector_position", "end_effector_rotation",
                             "gripper_close"),
    "franka": ("eef_position", "eef_rotation", "eef_position_delta", "eef_rotation_delta", "gripper_position",
               "gripper_velocity", "joint_position", "joint_velocity"),
}
_VECTOR_KEYS = ("observation.state", "action")


class DreamGenConnector:
    name: ClassVar[str] = "dreamgen"
    description: ClassVar[str] = ("DreamGen / GR00T-Dreams LeRobot datasets: generated videos, inverse-dynamics "
                                  "actions, <DREAM> tasks, placeholder state")

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        try:
            layout = load_layout(uri, storage_options, DREAM_LAYOUT)
        except (DatasetError, SourceError, OSError, ValueError):
            return False
        return bool(layout.tasks) and all(t.startswith(DREAM_PREFIX) for t in layout.tasks.values())

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        options = dict(options or {})
        options.setdefault("default_codebase_version", DREAM_LAYOUT)
        layout = load_layout(uri, options.get("storage_options"), options["default_codebase_version"])
        modality = _modality(layout)
        rate, warnings = control_rate(layout, options)
        if rate != layout.fps:
            options["fps"] = str(rate)
            options["declared_fps"] = str(layout.fps)
        overrides, width_warnings = _feature_overrides(layout, modality)
        if overrides:
            options["feature_overrides"] = overrides
        embodiment, origin, embodiment_warnings = _embodiment(uri, layout, modality, options)
        options["embodiment"], options["embodiment_from"] = embodiment, origin
        found = _LEROBOT.discover(uri, options)
        refs = [replace(r, format=self.name) for r in found.refs]
        return Discovery(format=self.name, dataset=found.dataset, uri=uri, refs=refs, missing=found.missing,
                         warnings=[*warnings, *width_warnings, *embodiment_warnings, *found.warnings],
                         duplicates=found.duplicates)

    def checksum(self, ref: EpisodeRef) -> str:
        return hashlib.sha256(f"{self.name}\0{_LEROBOT.checksum(ref)}".encode()).hexdigest()

    def read(self, ref: EpisodeRef) -> Episode:
        options = ref.options
        layout = load_layout(ref.uri, options.get("storage_options"), options.get("default_codebase_version"))
        if options.get("fps"):
            layout = replace(layout, fps=parse_rate(options["fps"]))
        if options.get("feature_overrides"):
            layout = replace(layout, features={**layout.features, **{
                key: {**layout.features.get(key, {}), **override}
                for key, override in options["feature_overrides"].items()}})
        entry = layout.episodes[int(ref.key)]
        listed = _list_annotation_columns(layout, entry.data_path, ref.key)
        if listed and not options.get("instruction_column") and GR00T_INSTRUCTION in listed:
            ref = replace(ref, options={**options, "instruction_column": "task_index"})
        episode = read_episode(layout, ref)
        if listed:
            episode = _with_list_annotations(layout, episode, entry.data_path, entry.index, listed)
        return to_synthetic(episode, options)


def control_rate(layout: Layout, options: dict) -> tuple[Fraction, list[str]]:
    """The rate steps really run at: the option, else timestamps (and videos) over info.json's ``fps``."""
    if options.get("fps"):
        return parse_rate(options["fps"]), []
    stamped = _timestamp_rate(layout)
    if stamped is None or abs(float(stamped) - float(layout.fps)) <= 0.01 * float(layout.fps):
        return layout.fps, []
    video_rates = {parse_rate(layout.video_info(k)["video.fps"]) for k in layout.video_keys
                   if "video.fps" in layout.video_info(k)}
    if video_rates and video_rates != {stamped}:
        return layout.fps, [f"meta/info.json says fps {layout.fps}, timestamps run at {stamped} and videos at "
                            f"{sorted(map(str, video_rates))}: kept {layout.fps}; pass the fps option to choose"]
    return stamped, [f"meta/info.json says fps {layout.fps} but timestamps"
                     + (" and videos" if video_rates else "") + f" run at {stamped}: using {stamped}"]


def _first_rows(layout: Layout, columns: list[str]) -> pa.Table | None:
    """The first episode's rows (only ``columns`` that exist), or None when its file is unreadable."""
    entry = layout.episodes[min(layout.episodes)]
    try:
        names = pq.read_schema(entry.data_path, filesystem=layout.fs).names
        wanted = [c for c in columns if c in names] + (["episode_index"] if "episode_index" in names else [])
        table = pq.read_table(entry.data_path, filesystem=layout.fs, columns=list(dict.fromkeys(wanted)))
    except (OSError, pa.ArrowInvalid):
        return None  # the reader reports the file per episode
    if "episode_index" in table.column_names:
        table = table.filter(pc.equal(table.column("episode_index"), entry.index))
    return table


def _timestamp_rate(layout: Layout) -> Fraction | None:
    table = _first_rows(layout, ["timestamp"])
    if table is None or "timestamp" not in table.column_names:
        return None
    stamps = np.sort(table.column("timestamp").to_numpy().astype(np.float64))
    steps = np.diff(stamps)
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    return Fraction(1 / float(np.median(steps))).limit_denominator(1001)


def _modality(layout: Layout) -> dict:
    """``meta/modality.json`` (GR00T's groups, copied by GR00T-Dreams from the embodiment), or {}."""
    path = f"{layout.root}/meta/modality.json"
    if not layout.fs.exists(path):
        return {}
    doc = read_json(layout.fs, path)
    return doc if isinstance(doc, dict) else {}


def _group_names(groups: dict, width: int) -> list[str] | None:
    """Per-dimension names from GR00T groups (``name`` or ``name_i``) when they tile ``0..width`` exactly."""
    try:
        spans = sorted((int(g["start"]), int(g["end"]), str(name)) for name, g in groups.items())
    except (KeyError, TypeError, ValueError):
        return None
    names, cursor = [], 0
    for start, end, name in spans:
        if start != cursor or end <= start:
            return None
        names += [name] if end - start == 1 else [f"{name}_{i}" for i in range(end - start)]
        cursor = end
    return names if cursor == width else None


def _feature_overrides(layout: Layout, modality: dict) -> tuple[dict, list[str]]:
    """State/action features as the data has them: width from the rows, names from modality.json."""
    table = _first_rows(layout, list(_VECTOR_KEYS))
    if table is None:
        return {}, []
    overrides, warnings = {}, []
    for key in _VECTOR_KEYS:
        if key not in table.column_names or table.num_rows == 0:
            continue
        try:
            width = int(fixed_list_to_numpy(table.column(key).slice(0, 1)).reshape(1, -1).shape[1])
        except (ValueError, pa.ArrowInvalid):
            continue  # the reader names the ragged column per episode
        declared = layout.feature_shape(key)
        override: dict = {}
        if declared and int(np.prod(declared)) != width:
            override["shape"], override["declared_shape"] = [width], list(declared)
            warnings.append(f"meta/info.json declares {key} shape {declared} but the rows hold {width} values "
                            f"({table.column(key).type}): using the data's width")
        names = _group_names(modality.get("state" if key == "observation.state" else "action") or {}, width)
        if names:
            override["names"] = names
        elif "shape" in override:
            override["names"] = None  # the declared names are for the declared width
        if override:
            overrides[key] = override
    return overrides, warnings


def _embodiment(uri: str, layout: Layout, modality: dict, options: dict) -> tuple[str, str, list[str]]:
    """(embodiment, where it came from, warnings)."""
    if options.get("embodiment"):
        return str(options["embodiment"]), "option", []
    groups = set((modality.get("action") or {}).keys())
    for tag, names in EMBODIMENT_ACTION_GROUPS.items():
        if groups == set(names):
            return tag, "modality.json", []
    prefix = posixpath.basename(uri.rstrip("/")).split(".")[0]
    if prefix in EMBODIMENT_ACTION_GROUPS:
        return prefix, "folder name", []
    robot = safe_name(str(layout.info.get("robot_type") or "dream")).lower()
    return robot, "robot_type", [f"embodiment unknown (meta/modality.json matches no GR00T-Dreams embodiment, "
                                 f"robot_type is {robot!r}): pass --embodiment so its statistics stay apart"]


def _list_annotation_columns(layout: Layout, path: str, episode: str) -> list[str]:
    try:
        schema = pq.read_schema(path, filesystem=layout.fs)
    except FileNotFoundError as exc:
        raise SourceError(path, "data file does not exist", episode) from exc
    except (OSError, pa.ArrowInvalid) as exc:
        raise SourceError(path, f"unreadable parquet: {exc}", episode) from exc
    return [f.name for f in schema if f.name.startswith("annotation.") and pa.types.is_list(f.type)
            and pa.types.is_integer(f.type.value_type)]


def _with_list_annotations(layout: Layout, episode: Episode, path: str, index: int, columns: list[str]) -> Episode:
    """``annotation.<source>`` ``[[task]]`` columns as per-step indices into the episode's task list."""
    table = pq.read_table(path, filesystem=layout.fs, columns=[*columns, "episode_index"]
                          if "episode_index" in pq.read_schema(path, filesystem=layout.fs).names else columns)
    if "episode_index" in table.column_names:
        table = table.filter(pc.equal(table.column("episode_index"), index))
    tasks = list(episode.meta.tasks)
    extras = dict(episode.steps.extras)
    for name in columns:
        try:
            values = fixed_list_to_numpy(table.column(name)).reshape(table.num_rows, -1)
        except (ValueError, pa.ArrowInvalid) as exc:
            raise SourceError(path, f"rows hold different numbers of task indices: {exc}", str(index), name) from exc
        if values.shape[1] != 1:
            raise SourceError(path, f"expected one task index per row ([[task]]), got {values.shape[1]}",
                              str(index), name)
        local = np.full(table.num_rows, -1, np.int32)
        for task in np.unique(values[:, 0]):
            text = layout.tasks.get(int(task))
            if text is None:
                raise SourceError(path, f"task index {int(task)} is not in the tasks table", str(index), name)
            if text not in tasks:
                tasks.append(text)
            local[values[:, 0] == task] = tasks.index(text)
        extras[name] = local
    return Episode(meta=replace(episode.meta, tasks=tasks), steps=replace(episode.steps, extras=extras),
                   videos=episode.videos)


def to_synthetic(episode: Episode, options: dict) -> Episode:
    meta, steps = episode.meta, episode.steps
    keep_prefix = bool(options.get("keep_task_prefix", False))
    tasks = [t if keep_prefix or not t.startswith(DREAM_PREFIX) else t[len(DREAM_PREFIX):].strip()
             for t in meta.tasks]
    state_source = str(options.get("state_source", "none"))
    if state_source == "none":
        steps = replace(steps, state_valid=np.zeros(steps.num_steps, bool))
    generator = None
    if any(options.get(k) for k in ("generator_model_id", "generator_checkpoint_sha", "generator_task")):
        generator = GeneratorInfo(model_id=str(options.get("generator_model_id", "")),
                                  checkpoint_sha=str(options.get("generator_checkpoint_sha", "")),
                                  task=str(options.get("generator_task", "other")))
    labeler = None
    if options.get("labeler_model_id") or options.get("labeler_checkpoint_sha"):
        labeler = LabelerInfo(model_id=str(options.get("labeler_model_id", "")),
                              checkpoint_sha=str(options.get("labeler_checkpoint_sha", "")))
    extras = dict(meta.extras)
    if any(t.startswith(DREAM_PREFIX) for t in meta.tasks):
        extras["dreamgen.task_prefix"] = DREAM_PREFIX
    if options.get("declared_fps"):
        extras["dreamgen.declared_fps"] = str(options["declared_fps"])
    if options.get("embodiment_from"):
        extras["dreamgen.embodiment_from"] = str(options["embodiment_from"])
    for key, override in (options.get("feature_overrides") or {}).items():
        if "declared_shape" in override:  # info.json's shape, which the data's width replaced
            extras[f"dreamgen.declared_shape.{key}"] = str(override["declared_shape"])
    lineage = Lineage(generator=generator, prompt=tasks[0] if tasks else "", action_source="inverse_dynamics",
                      labeler=labeler, state_source=state_source)
    meta = replace(meta, source_format="dreamgen", kind="synthetic", tasks=tasks, lineage=lineage, extras=extras)
    return Episode(meta=meta, steps=steps, videos=episode.videos)
