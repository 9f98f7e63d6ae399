"""JPEG encoding where the frames are (nvJPEG on CUDA), so only the compressed bytes cross to the host.

Two encoders, both optional: torchvision's ``encode_jpeg`` on CUDA tensors (nvJPEG, batched; it
always writes 4:4:4 chroma, which is the views' default) and nvImageCodec (any subsampling). When
neither fits the view, the caller copies the resized frames to the host and encodes them there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.video.backends import module_missing

DeviceJpegEncoder = Callable[[torch.Tensor], list[bytes]]  # [N, 3, H, W] uint8 on device -> JPEG files


def device_jpeg_encoder(device: str, quality: int, subsampling: str) -> tuple[str, DeviceJpegEncoder] | None:
    """(name, encoder) for ``device``, or None when no encoder can write this view's JPEGs there."""
    if not device.startswith("cuda"):
        return None
    if subsampling == "444" and module_missing("torchvision.io") is None:
        return "torchvision-nvjpeg", _torchvision(quality)
    if module_missing("nvidia.nvimgcodec") is None:
        return "nvimgcodec", _nvimgcodec(quality, subsampling)
    return None


def _torchvision(quality: int) -> DeviceJpegEncoder:
    from torchvision.io import encode_jpeg

    def encode(frames: torch.Tensor) -> list[bytes]:
        encoded = encode_jpeg(list(frames.contiguous()), quality=quality)
        return [bytes(t.cpu().numpy().tobytes()) for t in encoded]

    return encode


def _nvimgcodec(quality: int, subsampling: str) -> DeviceJpegEncoder:
    from nvidia import nvimgcodec

    css = {"444": "CSS_444", "422": "CSS_422", "420": "CSS_420"}[subsampling]
    chroma = getattr(nvimgcodec.ChromaSubsampling, css)
    try:  # nvImageCodec >= 0.6 names quality by type and value
        params = nvimgcodec.EncodeParams(quality_type=nvimgcodec.QualityType.QUALITY, quality_value=float(quality),
                                         chroma_subsampling=chroma)
    except (AttributeError, TypeError):
        params = nvimgcodec.EncodeParams(quality=float(quality), chroma_subsampling=chroma)
    encoder = nvimgcodec.Encoder()

    def encode(frames: torch.Tensor) -> list[bytes]:
        images = [nvimgcodec.as_image(f.permute(1, 2, 0).contiguous()) for f in frames]
        out = encoder.encode(images, "jpeg", params=params)
        return [bytes(o) for o in out]

    return encode
