"""HDF5 connectors: ALOHA/ACT (one file per episode) and robomimic/robosuite/MimicGen (demos in a file).

``uri`` is one HDF5 file or a folder searched recursively. Episode keys: the file path relative to
the folder for ALOHA, ``<file>:<demo>`` for robomimic.
"""

from __future__ import annotations

from typing import Any, ClassVar

from connectors.base import DatasetError, Discovery, EpisodeRef, SourceError
from connectors.common import dataset_name
from connectors.fsutil import join_inside
from connectors.hdf5.aloha import is_aloha, read_aloha_episode
from connectors.hdf5.h5util import file_checksum, locate, open_h5
from connectors.hdf5.robomimic import demo_names, is_robomimic, read_robomimic_episode
from schemas import Episode

__all__ = ["AlohaHdf5Connector", "RobomimicHdf5Connector"]


def _first_file_is(uri: str, storage_options: dict | None, check) -> bool:
    fs, root, files = locate(uri, storage_options)
    if not files:
        return False
    try:
        with open_h5(fs, join_inside(root, files[0])) as h5:
            return check(h5)
    except SourceError:
        return False


class AlohaHdf5Connector:
    name: ClassVar[str] = "aloha_hdf5"
    description: ClassVar[str] = ("ALOHA / ACT / Mobile ALOHA HDF5 episodes (observations/qpos, action, raw or "
                                  "JPEG-compressed images)")

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        return _first_file_is(uri, storage_options, is_aloha)

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        options = dict(options or {})
        _fs, _root, files = locate(uri, options.get("storage_options"))
        if not files:
            raise DatasetError(uri, "no HDF5 files")
        refs = [EpisodeRef(format=self.name, dataset=dataset_name(uri, options), uri=uri, key=f, options=options)
                for f in files]
        return Discovery(format=self.name, dataset=refs[0].dataset, uri=uri, refs=refs)

    def checksum(self, ref: EpisodeRef) -> str:
        fs, root, _ = locate(ref.uri, ref.options.get("storage_options"))
        return file_checksum(fs, join_inside(root, ref.key), ref)

    def read(self, ref: EpisodeRef) -> Episode:
        fs, root, _ = locate(ref.uri, ref.options.get("storage_options"))
        return read_aloha_episode(fs, join_inside(root, ref.key), ref)


class RobomimicHdf5Connector:
    name: ClassVar[str] = "robomimic_hdf5"
    description: ClassVar[str] = ("robomimic / robosuite / MimicGen HDF5 (data/demo_i/{obs,actions,rewards,dones,"
                                  "states}, env_args, mask filters)")

    def detect(self, uri: str, storage_options: dict | None = None) -> bool:
        return _first_file_is(uri, storage_options, is_robomimic)

    def discover(self, uri: str, options: dict[str, Any] | None = None) -> Discovery:
        options = dict(options or {})
        fs, root, files = locate(uri, options.get("storage_options"))
        if not files:
            raise DatasetError(uri, "no HDF5 files")
        dataset = dataset_name(uri, options)
        refs, warnings = [], []
        for relative in files:
            try:
                with open_h5(fs, join_inside(root, relative)) as h5:
                    demos = demo_names(h5)
            except SourceError:
                demos = ["*"]  # unreadable file: one ref whose read fails, so the report names the file
            if not demos:
                warnings.append(f"{relative}: no data/<demo> groups")
            refs += [EpisodeRef(format=self.name, dataset=dataset, uri=uri, key=f"{relative}:{demo}", options=options)
                     for demo in demos]
        if not refs:
            raise DatasetError(uri, "no robomimic demos (data/<demo> groups) in any HDF5 file")
        return Discovery(format=self.name, dataset=dataset, uri=uri, refs=refs, warnings=warnings)

    def checksum(self, ref: EpisodeRef) -> str:
        fs, root, _ = locate(ref.uri, ref.options.get("storage_options"))
        return file_checksum(fs, join_inside(root, ref.key.rsplit(":", 1)[0]), ref)

    def read(self, ref: EpisodeRef) -> Episode:
        fs, root, _ = locate(ref.uri, ref.options.get("storage_options"))
        relative, demo = ref.key.rsplit(":", 1)
        return read_robomimic_episode(fs, join_inside(root, relative), demo, ref)
