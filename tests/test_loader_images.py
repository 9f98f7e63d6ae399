"""Resize modes chosen in the view (stretch | pad | crop) and the per-sample transform hook."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.loaders import ViewSource, VLAConfig, VLADataset, make_loader
from pipeline.shards import ViewConfig
from pipeline.shards.images import crop_region, fit_frame, letterbox_region
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from schemas import table_to_metas
from tests.conftest import LETTERBOX_PAD as PAD
from tests.helpers import decode_all_frames, psnr, resize_like_view


def test_letterbox_region_follows_openpi_resize_with_pad():
    # openpi: ratio = max(w / W, h / H); rows = int(h / ratio); top = int((H - rows) / 2)
    assert letterbox_region(480, 640, 224, 224) == (28, 0, 168, 224)
    assert letterbox_region(640, 480, 224, 224) == (0, 28, 224, 168)
    assert letterbox_region(256, 256, 224, 224) == (0, 0, 224, 224)
    assert letterbox_region(100, 333, 224, 224) == (78, 0, 67, 224)
    assert crop_region(480, 640, 224, 224) == (0, 80, 480, 480)


def test_fit_frame_modes_on_a_frame():
    rng = np.random.default_rng(0)
    frame = cv_smooth(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    pad = fit_frame(frame, ViewConfig(resize="pad", pad_value=PAD))
    top, _, rows, cols = letterbox_region(480, 640, 224, 224)
    assert (pad[:top] == PAD).all() and (pad[top + rows:] == PAD).all()
    assert psnr(pad[top: top + rows], resize_like_view(frame, rows, cols)) >= 40
    crop = fit_frame(frame, ViewConfig(resize="crop"))
    assert psnr(crop, resize_like_view(frame[:, 80:560], 224, 224)) >= 40
    assert fit_frame(frame, ViewConfig()).shape == (224, 224, 3)
    with pytest.raises(ValueError, match="resize must be one of"):
        ViewConfig(resize="squash")


def cv_smooth(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), 6)


def test_resize_modes_keep_the_ids_of_stretch_views():
    assert "resize" not in ViewConfig().identity() and "pad_value" not in ViewConfig(resize="crop").identity()
    assert ViewConfig(resize="pad").view_id("v") != ViewConfig().view_id("v") != ViewConfig(resize="crop").view_id("v")


def test_letterbox_frames_equal_an_independent_resize_and_the_padding_is_exact(letterbox_view, sample_source):
    store, view_id, _ = letterbox_view
    dataset = VLADataset(ViewSource(str(store), view_id), VLAConfig(batch_size=8, seed=6, cameras=("cam_high",)))
    s = EpisodeStore(str(store))
    _, manifest = resolve(s, "latest")
    metas = {m.episode_id: m for m in table_to_metas(load_catalog(s, manifest))}
    decoded: dict = {}
    checked = 0
    for batch in itertools.islice(iter(dataset), 4):
        for b, key in enumerate(batch["key"]):
            episode_id, step = key.rsplit(":", 1)
            meta = metas[episode_id]
            camera = meta.camera("cam_high")
            top, left, rows, cols = letterbox_region(camera.height, camera.width, 224, 224)
            assert (top, rows) == (28, 168)
            file_index = int(meta.source_key) // 4  # the generator puts 4 episodes in each v3.0 file
            path = sample_source / f"videos/observation.images.cam_high/chunk-000/file-{file_index:03d}.mp4"
            if path not in decoded:
                decoded[path] = decode_all_frames(path)
            source = decoded[path][camera.frame_start + int(step)]
            got = batch["images"][b, 0].permute(1, 2, 0).numpy()
            assert (got[:top] == PAD).all() and (got[top + rows:] == PAD).all()
            assert psnr(got[top: top + rows, left: left + cols], resize_like_view(source, rows, cols)) >= 40.0
            checked += 1
    assert checked == 32


class FlipWithPid:
    """A per-sample transform (torchvision v2 transforms have the same call shape on a sample dict)."""

    def __call__(self, sample: dict) -> dict:
        return sample | {"images": torch.flip(sample["images"], dims=[-1]), "pid": torch.tensor(os.getpid())}


def test_sample_transform_runs_in_the_workers(sample_view):
    store, view_id, _ = sample_view
    source = ViewSource(str(store), view_id)
    config = VLAConfig(batch_size=4, seed=8, action_horizon=4)
    plain = list(make_loader(VLADataset(source, config), num_workers=0))[:3]
    loader = make_loader(VLADataset(source, config, sample_transform=FlipWithPid()), num_workers=2)
    flipped = list(itertools.islice(iter(loader), 3))
    for want, got in zip(plain, flipped, strict=True):
        assert got["key"] == want["key"]
        assert torch.equal(got["images"], torch.flip(want["images"], dims=[-1]))
        assert torch.equal(got["actions"], want["actions"])
        assert os.getpid() not in got["pid"].tolist()


REPO = Path(__file__).resolve().parent.parent
CONSUMER_PYTHON = Path(os.environ.get("ACTIONREEL_CONSUMER_PYTHON", REPO / ".venv-consumers/bin/python"))
TORCHVISION_PROBE = REPO / "tests/consumers/torchvision_probe.py"


@pytest.mark.skipif(not (CONSUMER_PYTHON.parent.parent / ".installed").exists(),
                    reason="torchvision loads only in the consumer venv here: `make consumers` builds it")
def test_torchvision_v2_transforms_run_in_the_workers(sample_view, tmp_path):
    """Real torchvision v2 transforms as the per-sample hook, in DataLoader workers (consumer venv: the
    project venv's CPU torch has no torchvision that loads). Flip/crop/ToDtype/Normalize equal a hand
    computation from the untransformed batches; an antialiased Resize equals the same transform run in
    the main process; state and actions pass through untouched."""
    store, view_id, _ = sample_view
    out = tmp_path / "probe"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run([str(CONSUMER_PYTHON), str(TORCHVISION_PROBE), str(store), view_id, str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    keys = json.loads(Path(f"{out}.json").read_text())
    assert keys["exact"] == keys["plain"] == keys["resized"] and len(keys["plain"]) == 3
    with np.load(f"{out}.npz") as arrays:
        got = {k: arrays[k] for k in arrays.files}
    plain = got["plain.images"]  # [batches, B, cameras, 3, 224, 224] uint8
    assert plain.dtype == np.uint8 and plain.shape[-2:] == (224, 224)
    mean = np.array([0.5, 0.25, 0.75], np.float32).reshape(3, 1, 1)
    std = np.array([0.25, 0.5, 0.125], np.float32).reshape(3, 1, 1)
    cropped = plain[..., 12:212, 12:212][..., ::-1].astype(np.float32)  # CenterCrop(200): round(24 / 2) = 12
    want = (cropped * np.float32(1.0 / 255.0) - mean) / std
    assert got["exact.images"].dtype == np.float32 and got["exact.images"].shape == want.shape
    np.testing.assert_array_equal(got["exact.images"], want)
    np.testing.assert_array_equal(got["exact.actions"], got["plain.actions"])
    assert got["resized.images"].shape[-3:] == (3, 112, 112)
    np.testing.assert_array_equal(got["resized.images"], got["resized.reference"])
    for name in ("exact.pid", "resized.pid"):
        assert keys["main_pid"] not in got[name].ravel().tolist() and len(set(got[name].ravel().tolist())) == 2
