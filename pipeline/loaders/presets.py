"""Sample specs of trainers: a VLA batch laid out as LeRobot, openpi or GR00T code expects it.

Each preset is a batch transform (it runs in the DataLoader workers, after the batch is built) plus a
function that configures the ``VLADataset`` the trainer's way. The facts they encode:

- **LeRobot** (``LeRobotDataset.__getitem__`` with ``delta_timestamps``): keys
  ``observation.images.<camera>`` ([B, 3, H, W], or [B, T, 3, H, W] with a delta; float32 in [0, 1] when
  ``float_images``, as LeRobot decodes them), ``observation.state``, ``action``, ``task`` (the task text),
  ``timestamp`` (float32 seconds), ``frame_index``, ``index``-like ``key``; ``<key>_is_pad`` for every key
  named in ``delta_timestamps``, by its clamp-and-pad rule (``pipeline.loaders.offsets``). All cameras
  must share one delta list (one image tensor holds them).
- **openpi** (``transforms.Normalize`` + ``PadStatesAndActions`` + ``image_tools.resize_with_pad``):
  ``image`` / ``image_mask`` dicts keyed by the model's camera names (``base_0_rgb``...), uint8 [B, 224,
  224, 3] letterboxed (the view must use ``resize="pad"``), a camera the robot lacks is zeros with mask
  False; ``state`` [B, action_dim] and ``actions`` [B, 50, action_dim] normalized with openpi's quantile
  or z-score formula then zero-padded to ``action_dim`` (32); ``prompt`` the task text.
- **GR00T** (``LeRobotSingleDataset.get_step_data`` with ``meta/modality.json``): ``video.<name>`` uint8
  [B, T, H, W, 3], ``state.<group>`` [B, T, d] and ``action.<group>`` [B, 16, d] sliced by the modality's
  start/end, ``annotation.human.action.task_description`` the task text, ``embodiment_tag``.
- **KeyMap**: renames keys for any other trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch

from pipeline.loaders.source import ViewSource
from pipeline.loaders.vla import VLAConfig, VLADataset

IMAGE_PREFIX = "observation.images."
OPENPI_ALOHA_CAMERAS = {"base_0_rgb": "cam_high", "left_wrist_0_rgb": "cam_left_wrist",
                        "right_wrist_0_rgb": "cam_right_wrist"}
GR00T_LANGUAGE_KEY = "annotation.human.action.task_description"
DEFAULT_CONFIG = VLAConfig()


class KeyMap:
    """A plain key mapping: ``{trainer key: loader key}``; other keys are dropped unless ``keep_rest``."""

    def __init__(self, mapping: Mapping[str, str], keep_rest: bool = False) -> None:
        self.mapping, self.keep_rest = dict(mapping), keep_rest

    def __call__(self, batch: dict) -> dict:
        missing = sorted(set(self.mapping.values()) - set(batch))
        if missing:
            raise KeyError(f"the batch has no {missing} (it has {sorted(batch)})")
        renamed = {new: batch[old] for new, old in self.mapping.items()}
        if self.keep_rest:
            used = set(self.mapping.values())
            renamed |= {k: v for k, v in batch.items() if k not in used and k not in renamed}
        return renamed


# ------------------------------------------------------------------ LeRobot

def lerobot_offsets(delta_timestamps: Mapping[str, Sequence[float]] | None, cameras: Sequence[str]) -> dict:
    """LeRobot's ``delta_timestamps`` (its keys) as this loader's per-key seconds."""
    out: dict[str, list[float]] = {}
    camera_deltas = set()
    for key, values in (delta_timestamps or {}).items():
        if key.startswith(IMAGE_PREFIX):
            if key.removeprefix(IMAGE_PREFIX) not in cameras:
                raise ValueError(f"delta_timestamps names {key!r}: the view's cameras are {list(cameras)}")
            camera_deltas.add(tuple(values))
        elif key in ("observation.state", "action"):
            out["state" if key == "observation.state" else "action"] = list(values)
        else:
            raise ValueError(f"delta_timestamps key {key!r}: only observation.images.*, observation.state, action")
    if len(camera_deltas) > 1:
        raise ValueError("every camera needs the same delta_timestamps (one image tensor holds them)")
    if camera_deltas:
        out["cameras"] = list(camera_deltas.pop())
    return out


class LeRobotBatch:
    """A VLA batch under LeRobot's keys (see the module doc)."""

    def __init__(self, cameras: Sequence[str], timed: Sequence[str], float_images: bool = False,
                 single_action: bool = False) -> None:
        self.cameras, self.timed = list(cameras), set(timed)
        self.float_images, self.single_action = float_images, single_action

    def __call__(self, batch: dict) -> dict:
        out: dict = {}
        images = batch["images"]
        for k, camera in enumerate(self.cameras):
            image = images[:, k]
            out[IMAGE_PREFIX + camera] = image.to(torch.float32) / 255.0 if self.float_images else image
            if "cameras" in self.timed:
                out[f"{IMAGE_PREFIX}{camera}_is_pad"] = batch["images_is_pad"]
        out["observation.state"] = batch["state"]
        out["action"] = batch["actions"][:, 0] if self.single_action else batch["actions"]
        if "state" in self.timed:
            out["observation.state_is_pad"] = batch["state_is_pad"]
        if not self.single_action:
            out["action_is_pad"] = batch["action_is_pad"]
        out["task"] = batch["instruction"]
        out["timestamp"] = (batch["timestamp_ns"].to(torch.float64) / 1e9).to(torch.float32)
        out["frame_index"] = batch["step"]
        out["episode_id"] = batch["episode_id"]
        return out


def lerobot_dataset(source: ViewSource, delta_timestamps: Mapping[str, Sequence[float]] | None = None,
                    float_images: bool = False, config: VLAConfig = DEFAULT_CONFIG) -> VLADataset:
    """A loader whose batches have LeRobot's keys and ``delta_timestamps`` semantics."""
    cameras = list(config.cameras) if config.cameras is not None else list(source.manifest.cameras)
    offsets = lerobot_offsets(delta_timestamps, cameras)
    single = "action" not in offsets
    config = replace(config, cameras=tuple(cameras), delta_timestamps=offsets or None, delta_steps=None,
                     action_horizon=1 if single else config.action_horizon)
    transform = LeRobotBatch(cameras, list(offsets), float_images, single)
    return VLADataset(source, config, batch_transform=transform)


# ------------------------------------------------------------------ openpi

class OpenPIBatch:
    """A VLA batch as openpi's data pipeline hands it to the model (see the module doc)."""

    def __init__(self, camera_names: Mapping[str, str], view_cameras: Sequence[str]) -> None:
        self.camera_names = dict(camera_names)
        self.index = {camera: k for k, camera in enumerate(view_cameras)}

    def __call__(self, batch: dict) -> dict:
        images, mask = batch["images"], batch["image_mask"]
        size, _, _, height, width = images.shape
        image, image_mask = {}, {}
        for name, camera in self.camera_names.items():
            k = self.index.get(camera)
            if k is None:  # the robot has no such camera: a black image the model is told to ignore
                image[name] = torch.zeros((size, height, width, 3), dtype=torch.uint8)
                image_mask[name] = torch.zeros(size, dtype=torch.bool)
            else:
                image[name] = images[:, k].permute(0, 2, 3, 1)
                image_mask[name] = mask[:, k].clone()
        return {"image": image, "image_mask": image_mask, "state": batch["state"], "actions": batch["actions"],
                "prompt": batch["instruction"], "action_is_pad": batch["action_is_pad"]}


def openpi_dataset(source: ViewSource, camera_names: Mapping[str, str] = OPENPI_ALOHA_CAMERAS,
                   action_horizon: int = 50, use_quantiles: bool = True, action_dim: int = 32,
                   config: VLAConfig = DEFAULT_CONFIG) -> VLADataset:
    """pi0 / pi0.5 inputs: 224x224 letterboxed images, openpi's normalization, 32-d padding, 50-step chunks."""
    view = source.manifest.config
    if (view.height, view.width) != (224, 224) or view.resize != "pad":
        raise ValueError(f"openpi expects 224x224 frames resized with padding: this view is {view.height}x"
                         f"{view.width} resize={view.resize!r}; shard with ViewConfig(height=224, width=224, "
                         f"resize='pad')")
    cameras = [c for c in camera_names.values() if c in source.manifest.cameras]
    config = replace(config, cameras=tuple(cameras), action_horizon=action_horizon, delta_steps=None,
                     delta_timestamps=None, state_pad_to=action_dim, action_pad_to=action_dim,
                     normalization="openpi_quantile" if use_quantiles else "openpi_mean_std")
    return VLADataset(source, config, batch_transform=OpenPIBatch(camera_names, cameras))


# ------------------------------------------------------------------ GR00T

class GR00TBatch:
    """A VLA batch as GR00T's ``get_step_data`` gives it, modality groups sliced out (see the module doc)."""

    def __init__(self, modality: Mapping, cameras: Sequence[str], embodiment_tag: str) -> None:
        self.state = {name: (int(r["start"]), int(r["end"])) for name, r in modality.get("state", {}).items()}
        self.action = {name: (int(r["start"]), int(r["end"])) for name, r in modality.get("action", {}).items()}
        self.videos = gr00t_cameras(modality)
        self.index = {camera: k for k, camera in enumerate(cameras)}
        self.embodiment_tag = embodiment_tag

    def __call__(self, batch: dict) -> dict:
        out: dict = {}
        for name, camera in self.videos.items():
            out[f"video.{name}"] = batch["images"][:, self.index[camera]].permute(0, 1, 3, 4, 2)
        for name, (start, end) in self.state.items():
            out[f"state.{name}"] = batch["state"][..., start:end]
        for name, (start, end) in self.action.items():
            out[f"action.{name}"] = batch["actions"][..., start:end]
        out[GR00T_LANGUAGE_KEY] = batch["instruction"]
        out["embodiment_tag"] = [self.embodiment_tag] * len(batch["instruction"])
        return out


def gr00t_cameras(modality: Mapping) -> dict[str, str]:
    """GR00T video name -> view camera (the ``original_key`` without LeRobot's image prefix)."""
    return {name: str(spec.get("original_key", IMAGE_PREFIX + name)).removeprefix(IMAGE_PREFIX)
            for name, spec in modality.get("video", {}).items()}


def gr00t_dataset(source: ViewSource, modality: Mapping, embodiment_tag: str = "new_embodiment",
                  video_offsets: Sequence[int] = (0,), state_offsets: Sequence[int] = (0,), action_horizon: int = 16,
                  config: VLAConfig = DEFAULT_CONFIG) -> VLADataset:
    """GR00T N1.x samples: modality groups, 16-step action chunks, the embodiment tag."""
    cameras = list(gr00t_cameras(modality).values())
    unknown = sorted(set(cameras) - set(source.manifest.cameras))
    if unknown:
        raise ValueError(f"modality video {unknown} not in the view's cameras {list(source.manifest.cameras)}")
    steps = {"state": list(state_offsets), "action": list(range(action_horizon))}
    if cameras:
        steps["cameras"] = list(video_offsets)
    config = replace(config, cameras=tuple(cameras), delta_steps=steps, delta_timestamps=None)
    return VLADataset(source, config, batch_transform=GR00TBatch(modality, cameras, embodiment_tag))

