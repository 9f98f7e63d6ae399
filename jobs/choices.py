"""The values the command line's enum options accept, spelled out so that checking them imports nothing heavy.

Each tuple mirrors a pipeline constant; tests/test_cli.py asserts they stay equal.
"""

from __future__ import annotations

FORMATS = ("dreamgen", "lerobot", "rlds", "zarr_replay", "aloha_hdf5", "robomimic_hdf5", "ros", "video_folder",
           "worldmodel")  # connectors._REGISTRY
KINDS = ("teleop", "sim", "synthetic")  # schemas.episode.KINDS
FRAME_CODECS = ("jpg", "png", "npy", "mp4")  # pipeline.shards.view.FRAME_CODECS
JPEG_SUBSAMPLING = ("444", "422", "420")  # pipeline.shards.view.JPEG_SUBSAMPLING
RESIZE_MODES = ("stretch", "pad", "crop")  # pipeline.shards.view.RESIZE_MODES
DECODERS = ("auto", "pyav", "torchcodec-cpu", "torchcodec-cuda", "nvcodec")  # "auto" + pipeline.video.backends
EXPORT_LAYOUTS = ("v3.0", "v2.1", "cosmos-action")  # pipeline.export LAYOUTS + COSMOS_LAYOUT
SAMPLE_LAYOUTS = ("v3.0", "v2.1")  # pipeline.samples.SampleSpec.layout
SAMPLE_CODECS = ("libx264", "libx265", "libsvtav1")  # pipeline.samples.SampleSpec.codec
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")  # libx264's own preset names
DEFAULT_MAX_ACTION_HORIZON = 100  # pipeline.shards.view.ViewConfig.max_action_horizon
DEFAULT_SHARD_BYTES = 1 << 30  # pipeline.shards.view.ViewConfig.target_shard_bytes
