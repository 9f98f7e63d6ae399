"""Open a Cosmos action-conditioned export with cosmos-predict2's own ``ActionConditionedDataset``.

Runs under the consumer environment that ``make consumers`` builds (cosmos-predict2 1.0.9 with decord,
einops and imageio; it imports nothing of ActionReel). Its ``__getitem__`` puts placeholder tensors on
CUDA; on a machine without a GPU ``Tensor.cuda`` is made the identity first, nothing else is changed.
Writes ``<out>.npz`` (per sample: ``action.<i>``, ``video.<i>`` [C, T, H, W] uint8, ``frames.<i>`` the
dataset's own decord decode of the clip's frames) and ``<out>.json`` (split, sample count, frame ids,
keys, annotation files, and the dataset's error count).

    python cosmos_probe.py ROOT OUT --split val --height H --width W
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from cosmos_predict2.data.action_conditioned.action_conditioned_dataset import ActionConditionedDataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("--split", default="train")
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self  # the placeholders only; the data path is untouched
    annotation = os.path.join(args.root, "annotation")
    dataset = ActionConditionedDataset(
        os.path.join(annotation, "train"), os.path.join(annotation, "val"), os.path.join(annotation, "test"),
        video_path=args.root, sequence_interval=1, num_frames=13, cam_ids=[0], accumulate_action=False,
        video_size=[args.height, args.width], val_start_frame_interval=1, mode=args.split)
    arrays, samples = {}, []
    for i in range(len(dataset)):
        item = dataset.__getitem__(i, cam_id=0)
        sample = dataset.samples[i]
        label = json.load(open(sample["ann_file"]))
        path = os.path.join(dataset.video_path, label["videos"][0]["video_path"])
        arrays[f"action.{i}"] = item["action"].numpy()
        arrays[f"video.{i}"] = item["video"].numpy()
        arrays[f"frames.{i}"] = dataset._load_video(path, sample["frame_ids"])
        samples.append({"frame_ids": sample["frame_ids"], "key": item["__key__"],
                        "annotation_file": os.path.relpath(item["annotation_file"], args.root)})
    np.savez(f"{args.out}.npz", **arrays)
    with open(f"{args.out}.json", "w") as handle:
        json.dump({"split": args.split, "samples": samples, "wrong_number": dataset.wrong_number}, handle)


if __name__ == "__main__":
    main()
