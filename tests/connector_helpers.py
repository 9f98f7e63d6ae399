"""Shared by the connector tests: ingest through the real job, read the store back, compare images."""

from __future__ import annotations

import numpy as np

from jobs.ingest import run_ingest
from pipeline.ingest import IngestConfig
from pipeline.store.episodes import EpisodeStore
from pipeline.store.versions import load_catalog, resolve
from pipeline.video import EncodeConfig, PyAVDecoder
from schemas import Episode, EpisodeMeta, StepArrays, make_episode_id, table_to_metas

# libx264rgb at crf 0 on rgb24 is bit-exact: lossless sources must come back equal.
LOSSLESS = IngestConfig(encode=EncodeConfig(codec="libx264rgb", crf=0, pix_fmt="rgb24"))


def ingest(source, store_path, **kwargs):
    """Run the ingest job; returns (report, store, {source_key: meta})."""
    report = run_ingest(str(source), str(store_path), **kwargs)
    store = EpisodeStore(str(store_path))
    metas = {}
    if report.version_id:
        _, manifest = resolve(store, "latest")
        metas = {m.source_key: m for m in table_to_metas(load_catalog(store, manifest))}
    return report, store, metas


def assert_jpeg_kept(episode: Episode, camera: str, store_path, channel_order: str) -> list[np.ndarray]:
    """The camera's source JPEGs are stored as they are, with ``channel_order``, and decode to exactly the
    frames the connector's own decode path produces. Returns those frames."""
    store = EpisodeStore(str(store_path))
    meta = store.write_episode(episode, LOSSLESS.encode)
    cam = meta.camera(camera)
    assert (cam.encoding, cam.codec, cam.channel_order) == ("source", "mjpeg", channel_order)
    expected = list(episode.videos[camera].frames())
    assert all(np.array_equal(a, b) for a, b in zip(frames_of(store, meta, camera), expected, strict=True))
    return expected


def steps_of(store: EpisodeStore, meta: EpisodeMeta) -> StepArrays:
    return store.read_steps(meta)


def frames_of(store: EpisodeStore, meta: EpisodeMeta, camera: str) -> list[np.ndarray]:
    cam = meta.camera(camera)
    video = store.video_input(cam)
    indices = list(range(cam.frame_start, cam.frame_start + cam.num_frames))
    return [frame for _, frame in PyAVDecoder(threads=1).frames(video, indices)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth, distinct RGB picture per seed (video codecs keep such images above 40 dB)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = seed * 0.7
    image = np.stack([
        128 + 100 * np.sin(x / width * 2 * np.pi + phase),
        128 + 100 * np.cos(y / height * 2 * np.pi + phase / 2),
        128 + 80 * np.sin((x + y) / (width + height) * 4 * np.pi - phase),
    ], axis=-1)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def noise_image(height: int, width: int, seed: int) -> np.ndarray:
    """Random pixels: only a lossless path brings these back equal."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def quarantine_by_key(report) -> dict[str, dict]:
    return {q["source_key"]: q for q in report.quarantined}


def assert_quarantined(report, key: str, *, file_part: str, field: str, words: str, metas: dict,
                       dataset: str = "") -> None:
    """The episode is quarantined with a reason naming file, episode and field, and is not in the catalog.

    Connector errors name the episode by its source key; store errors by its episode id.
    """
    record = quarantine_by_key(report).get(key)
    assert record is not None, f"{key} not quarantined: {report.quarantined}"
    assert file_part in record["file"], record
    assert record["field"] == field, record
    assert record["episode_id"] in {key, make_episode_id(dataset, key) if dataset else key}, record
    assert record["episode_id"] in record["reason"], record
    assert words in record["reason"], record
    assert key not in metas
