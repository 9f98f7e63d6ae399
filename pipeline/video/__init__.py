"""Video: probing, decoding behind one interface (CPU now, GPU backends later), encoding, resizing."""

from pipeline.video.decode import FrameDecoder, PyAVDecoder, VideoInput, available_decoders
from pipeline.video.encode import EncodeConfig, encode_frames
from pipeline.video.probe import VideoError, VideoProbe, probe_container, probe_video
from pipeline.video.resize import resize_frame

__all__ = ["EncodeConfig", "FrameDecoder", "PyAVDecoder", "VideoError", "VideoInput", "VideoProbe",
           "available_decoders", "encode_frames", "probe_container", "probe_video", "resize_frame"]
