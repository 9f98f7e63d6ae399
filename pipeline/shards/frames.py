"""Frame pipelines: one video's wanted frames -> decoded -> resized -> encoded shard members.

- CpuFramePipeline: any FrameDecoder, resize (swscale on the decoded picture, fused with the colour
  conversion, or OpenCV on RGB: ``ViewConfig.scaler``), encode on the CPU (JPEG straight from swscale's
  YCbCr planes by default; OpenCV from BGR otherwise): the reference path, whose bytes define a
  CPU-built shard (reproducible byte for byte).
- DeviceFramePipeline: a decoder that yields tensors on its device (NVDEC), resize on that device,
  JPEG on that device (nvJPEG); only compressed bytes cross to the host. Without a device JPEG
  encoder that fits the view, resized frames are copied to the host and encoded there.
- RoutedFrames: picks a backend per video (pipeline.video.router), builds pipelines lazily, and
  when a GPU backend cannot be built or fails on a file, re-does that file on the CPU and records
  the fallback (file, backend, reason). It also records which backend decoded each video.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from pipeline.shards.images import encode_image, encode_member, fit_frame, member_format
from pipeline.shards.view import ViewConfig
from pipeline.video import FrameDecoder, VideoInput
from pipeline.video.backends import CUDA, backend_spec, build_backend
from pipeline.video.resize import scale_array
from pipeline.video.router import Devices, Route, RouterConfig, route

DEVICE_BATCH = 16  # frames per device batch: 16 x 1080p RGB in float32 is ~400 MB of GPU memory


class FramePipeline(Protocol):
    name: str

    def encode_video(self, video: VideoInput, indices: Sequence[int], view: ViewConfig, *, episode_id: str = "",
                     camera: str = "") -> dict[int, bytes]:
        """The encoded member bytes of each frame in ``indices`` (frame index within the video)."""
        ...


class CpuFramePipeline:
    def __init__(self, decoder: FrameDecoder) -> None:
        self.decoder = decoder
        self.name = decoder.name

    def encode_video(self, video: VideoInput, indices: Sequence[int], view: ViewConfig, *, episode_id: str = "",
                     camera: str = "") -> dict[int, bytes]:
        if view.resize != "stretch" or view.scaler == "opencv":
            # letterbox / crop fit the RGB frame first; opencv keeps the bytes of views built before swscale
            return {index: encode_image(fit_frame(rgb, view), view)
                    for index, rgb in self.decoder.frames(video, indices)}
        if view.frame_codec == "jpg" and view.scaler == "swscale-ycbcr" and hasattr(self.decoder, "jpeg_planes"):
            images = self.decoder.jpeg_planes(video, indices, view.height, view.width, view.jpeg_subsampling)
        else:
            images = self._scaled(video, indices, view, member_format(view))
        return {index: encode_member(image, view) for index, image in images}

    def _scaled(self, video: VideoInput, indices: Sequence[int], view: ViewConfig, fmt: str):
        """Frames at the view's size in ``fmt``: fused in the decoder when it can, else swscale on its arrays."""
        if hasattr(self.decoder, "scaled_frames"):
            return self.decoder.scaled_frames(video, indices, view.height, view.width, fmt)
        return ((index, scale_array(rgb, view.height, view.width, fmt))
                for index, rgb in self.decoder.frames(video, indices))


class DeviceFramePipeline:
    """Decode -> resize -> encode with the frames on the decoder's device (torch tensors)."""

    def __init__(self, decoder, batch_size: int = DEVICE_BATCH) -> None:
        self.decoder = decoder  # a DeviceFrameDecoder (has .device and .batches)
        self.name = decoder.name
        self.batch_size = batch_size
        self._encoders: dict[tuple, tuple[str, object] | None] = {}

    def encoder_for(self, view: ViewConfig) -> str:
        """Where this view's frames get encoded: a device encoder's name, or "host"."""
        found = self._device_encoder(view)
        return found[0] if found else "host"

    def encode_video(self, video: VideoInput, indices: Sequence[int], view: ViewConfig, *, episode_id: str = "",
                     camera: str = "") -> dict[int, bytes]:
        from pipeline.video.resize_torch import resize_batch

        found = self._device_encoder(view)
        out: dict[int, bytes] = {}
        for chunk, frames in self.decoder.batches(video, indices, self.batch_size):
            if view.resize != "stretch":  # letterbox / crop: the CPU rule on the host, so both paths agree
                host = frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()
                out.update(zip(chunk, [encode_image(fit_frame(image, view), view) for image in host], strict=True))
                continue
            resized = resize_batch(frames, view.height, view.width)
            if found is not None:
                encoded = found[1](resized)
            else:
                host = resized.permute(0, 2, 3, 1).contiguous().cpu().numpy()
                encoded = [encode_image(np.ascontiguousarray(image), view) for image in host]
            out.update(zip(chunk, encoded, strict=True))
        return out

    def _device_encoder(self, view: ViewConfig):
        key = (view.frame_codec, view.jpeg_quality, view.jpeg_subsampling)
        if key not in self._encoders:
            from pipeline.video.jpeg_device import device_jpeg_encoder

            self._encoders[key] = (device_jpeg_encoder(str(self.decoder.device), view.jpeg_quality,
                                                       view.jpeg_subsampling) if view.frame_codec == "jpg" else None)
        return self._encoders[key]


def as_pipeline(decoder: FrameDecoder | FramePipeline) -> FramePipeline:
    """A frame pipeline as given, or a bare decoder wrapped in the CPU pipeline (today's path)."""
    return decoder if hasattr(decoder, "encode_video") else CpuFramePipeline(decoder)


def pipeline_for(decoder: FrameDecoder) -> FramePipeline:
    """The pipeline a built backend runs in: on the GPU when it decodes there, else the CPU one (a CPU
    decoder's frames go through OpenCV, which resizes and encodes faster than torch on the CPU)."""
    on_gpu = hasattr(decoder, "batches") and str(getattr(decoder, "device", "cpu")).startswith("cuda")
    return DeviceFramePipeline(decoder) if on_gpu else CpuFramePipeline(decoder)


class RoutedFrames:
    """Per video: route, decode on the chosen backend, fall back to CPU on failure, record both."""

    name = "routed"

    def __init__(self, config: RouterConfig | None = None, devices: Devices | None = None,
                 threads: int | None = None) -> None:
        self.config = config or RouterConfig()
        self.devices = devices if devices is not None else Devices.detect()
        self.threads = threads
        self.records: list[dict] = []
        self.fallbacks: list[dict] = []
        self._pipelines: dict[str, FramePipeline] = {}
        self._broken: dict[str, str] = {}  # backend -> why it cannot be built here
        self._lock = threading.Lock()

    def encode_video(self, video: VideoInput, indices: Sequence[int], view: ViewConfig, *, episode_id: str = "",
                     camera: str = "") -> dict[int, bytes]:
        chosen = route(video.probe, self.devices, self.config)
        record = {"episode_id": episode_id, "camera": camera, "file": video.uri, "backend": chosen.backend,
                  "device": chosen.device, "frames": len(indices), "reason": chosen.reason}
        if chosen.device != CUDA:
            result = self._pipeline(chosen.backend).encode_video(video, indices, view)
        else:
            result = self._on_gpu_or_cpu(chosen, video, indices, view, record)
        with self._lock:
            self.records.append(record)
        return result

    def drain(self) -> tuple[list[dict], list[dict]]:
        """The records and fallbacks so far (and forget them): one shard's worth in the job."""
        with self._lock:
            records, fallbacks = self.records, self.fallbacks
            self.records, self.fallbacks = [], []
        return records, fallbacks

    def _on_gpu_or_cpu(self, chosen: Route, video: VideoInput, indices: Sequence[int], view: ViewConfig,
                       record: dict) -> dict[int, bytes]:
        try:
            pipeline = self._pipeline(chosen.backend)
            result = pipeline.encode_video(video, indices, view)
            if isinstance(pipeline, DeviceFramePipeline):
                record["encoder"] = pipeline.encoder_for(view)
            return result
        except Exception as exc:  # any GPU failure: this file is redone on the CPU, and said so
            reason = self._broken.get(chosen.backend) or f"{type(exc).__name__}: {exc}"
        cpu = self.config.cpu_backend
        fallback = {"episode_id": record["episode_id"], "camera": record["camera"], "file": video.uri,
                    "backend": chosen.backend, "retried_on": cpu, "reason": reason}
        record.update(backend=cpu, device=backend_spec(cpu).device, fallback_from=chosen.backend,
                      reason=f"fallback: {reason}")
        result = self._pipeline(cpu).encode_video(video, indices, view)
        with self._lock:
            self.fallbacks.append(fallback)
        return result

    def _pipeline(self, backend: str) -> FramePipeline:
        with self._lock:
            if backend in self._pipelines:
                return self._pipelines[backend]
            if backend in self._broken:
                raise RuntimeError(self._broken[backend])
        try:
            built = pipeline_for(build_backend(backend, threads=self.threads))
        except Exception as exc:  # missing library, no CUDA, bad driver: remembered, not retried per file
            with self._lock:
                self._broken[backend] = f"cannot build {backend}: {type(exc).__name__}: {exc}"
            raise
        with self._lock:
            self._pipelines[backend] = built
        return built
