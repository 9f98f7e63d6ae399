"""DreamGen-style LeRobot datasets: generated videos whose actions an inverse-dynamics model labelled.

Read through the LeRobot connector, then made honest about what they are: ``kind = synthetic``,
``action_source = inverse_dynamics``, the placeholder state masked (``state_source = none``, values
kept but never counted), the ``<DREAM>`` task prefix moved out of the instruction into extras, and
the labeler and generator recorded when the options name them. DreamGen writes ``fps: 8`` in
``meta/info.json`` beside ``timestamp = i/16``: when the timestamps (and the videos, if they say)
agree on another rate than info.json, that rate is the control rate and the declared one is kept in
extras.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.base import DatasetError, Discovery, EpisodeRef, SourceError
from connectors.lerobot import LeRobotConnector
from connectors.lerobot.layout import Layout, load_layout
from connectors.lerobot.reader import read_episode
from schemas import Episode, GeneratorInfo, LabelerInfo, Lineage, parse_rate

DREAM_PREFIX = "<DREAM>"
_LEROBOT = LeRobotConnector()


class DreamGenConnector:
    name: ClassVar[str] = "dreamgen"
    description: ClassVar[str] = ("DreamGen-style LeRobot datasets: generated videos, inverse-dynamics actions, "
                                  "<DREAM> tasks, placeholder state")

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        try:
            layout = load_layout(uri, storage_options)
        except (DatasetError, SourceError, OSError, ValueError):
            return False
        return bool(layout.tasks) and all(t.startswith(DREAM_PREFIX) for t in layout.tasks.values())

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        options = dict(options or {})
        layout = load_layout(uri, options.get("storage_options"))
        rate, warnings = control_rate(layout, options)
        if rate != layout.fps:
            options["fps"] = str(rate)
            options["declared_fps"] = str(layout.fps)
        found = _LEROBOT.discover(uri, options)
        refs = [replace(r, format=self.name) for r in found.refs]
        return Discovery(format=self.name, dataset=found.dataset, uri=uri, refs=refs, missing=found.missing,
                         warnings=[*warnings, *found.warnings])

    def checksum(self, ref: EpisodeRef) -> str:
        return hashlib.sha256(f"{self.name}\0{_LEROBOT.checksum(ref)}".encode()).hexdigest()

    def read(self, ref: EpisodeRef) -> Episode:
        layout = load_layout(ref.uri, ref.options.get("storage_options"))
        if ref.options.get("fps"):
            layout = replace(layout, fps=parse_rate(ref.options["fps"]))
        return to_synthetic(read_episode(layout, ref), ref.options)


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


def _timestamp_rate(layout: Layout) -> Fraction | None:
    entry = layout.episodes[min(layout.episodes)]
    try:
        table = pq.read_table(entry.data_path, filesystem=layout.fs)
    except (OSError, pa.ArrowInvalid):
        return None  # the reader reports the file per episode
    if "timestamp" not in table.column_names:
        return None
    if "episode_index" in table.column_names:
        table = table.filter(pc.equal(table.column("episode_index"), entry.index))
    stamps = np.sort(table.column("timestamp").to_numpy().astype(np.float64))
    steps = np.diff(stamps)
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    return Fraction(1 / float(np.median(steps))).limit_denominator(1001)


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
    lineage = Lineage(generator=generator, prompt=tasks[0] if tasks else "", action_source="inverse_dynamics",
                      labeler=labeler, state_source=state_source)
    meta = replace(meta, source_format="dreamgen", kind="synthetic", tasks=tasks, lineage=lineage, extras=extras)
    return Episode(meta=meta, steps=steps, videos=episode.videos)
