"""The sample writer's codecs: each writes the codec info.json names, the declared frame count, and a
keyframe a second for H.264 and HEVC, every 2 frames for AV1 (the shard-job bench's HEVC rows use it)."""

from __future__ import annotations

import json

import av
import pytest

from pipeline.samples import SampleSpec, write_sample_dataset
from pipeline.video import probe_video


@pytest.mark.parametrize(("encoder", "codec", "keyframe_every"), [("libx264", "h264", 10), ("libx265", "hevc", 10),
                                                                    ("libsvtav1", "av1", 2)])
def test_sample_codec_is_the_one_declared(tmp_path, encoder, codec, keyframe_every):
    spec = SampleSpec(num_episodes=1, fps=10, height=64, width=96, min_steps=25, max_steps=25, codec=encoder,
                      layout="v2.1")
    root = write_sample_dataset(tmp_path / "ds", spec)
    info = json.loads((root / "meta/info.json").read_text())
    videos = sorted(root.glob("videos/**/*.mp4"))
    assert len(videos) == 2
    for video in videos:
        key = video.parent.name
        assert info["features"][key]["video_info"]["video.codec"] == codec
        assert probe_video(str(video), lambda path=video: path.open("rb")).codec == codec
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            packets = [p for p in container.demux(stream) if p.size]
        assert len(packets) == 25
        keyframes = [i for i, p in enumerate(sorted(packets, key=lambda p: p.pts)) if p.is_keyframe]
        assert keyframes == list(range(0, 25, keyframe_every))


def test_unknown_sample_codec_is_refused(tmp_path):
    with pytest.raises(ValueError, match="libvpx"):
        write_sample_dataset(tmp_path / "ds", SampleSpec(codec="libvpx"))
