"""Video: probing, decoding behind one interface (PyAV, torchcodec CPU/CUDA, PyNvVideoCodec), per-video
routing between them, encoding, resizing. GPU libraries are optional and imported only when used."""

from pipeline.video.backends import BackendSpec, BackendUnavailable, available_decoders, register_backend
from pipeline.video.decode import DeviceFrameDecoder, FrameDecoder, PyAVDecoder, VideoInput
from pipeline.video.encode import EncodeConfig, encode_frames
from pipeline.video.probe import VideoError, VideoProbe, probe_container, probe_video
from pipeline.video.resize import resize_frame
from pipeline.video.router import Devices, Route, RouterConfig, route

__all__ = ["BackendSpec", "BackendUnavailable", "DeviceFrameDecoder", "Devices", "EncodeConfig", "FrameDecoder",
           "PyAVDecoder", "Route", "RouterConfig", "VideoError", "VideoInput", "VideoProbe", "available_decoders",
           "encode_frames", "probe_container", "probe_video", "register_backend", "resize_frame", "route"]
