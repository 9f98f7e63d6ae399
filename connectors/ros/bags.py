"""Bag access behind one small interface: topics, metadata and decoded messages in log-time order.

MCAP files are read with ``mcap`` (``mcap-ros2-support`` decodes CDR; JSON is parsed as is);
rosbag2 folders (mcap or sqlite3 storage) and ROS 1 ``.bag`` files with ``rosbags``, whose
typestore is filled from the definitions recorded in the bag.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import fsspec

from connectors.base import SourceError

MCAP_SUFFIX = ".mcap"
ROS1_SUFFIX = ".bag"
DB3_SUFFIX = ".db3"


class Bag:
    """A recording. ``messages`` yields ``(topic, log_time_ns, decoded message)``; errors name ``episode``."""

    path: str
    episode: str = ""

    def topics(self) -> dict[str, str]:
        raise NotImplementedError

    def metadata(self) -> dict[str, dict[str, str]]:
        return {}

    def messages(self, topics: list[str], start: int | None = None, end: int | None = None,
                 decode: bool | Collection[str] = True) -> Iterator[tuple[str, int, Any]]:
        """Messages of ``topics`` with ``start <= log time <= end``, in log-time order.

        ``decode`` is True, False, or the topics to decode; the others yield a ``Raw`` message that
        decodes on demand (a first pass keeps image payloads without deserializing them).
        """
        raise NotImplementedError


class Raw:
    """A serialized message and the function that decodes it."""

    __slots__ = ("data", "decoder")

    def __init__(self, data: bytes, decoder: Callable[[bytes], Any]) -> None:
        self.data, self.decoder = data, decoder

    def decode(self) -> Any:
        return self.decoder(self.data)


def is_bag_path(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    if fs.isdir(path):
        return fs.exists(f"{path}/metadata.yaml")
    return path.endswith((MCAP_SUFFIX, ROS1_SUFFIX))


def open_bag(fs: fsspec.AbstractFileSystem, path: str, episode: str = "") -> Bag:
    if fs.isdir(path) or path.endswith((ROS1_SUFFIX, DB3_SUFFIX)):
        return RosbagsBag(fs, path, episode)
    return McapBag(fs, path, episode)


class _JsonDecoderFactory:
    """JSON-encoded MCAP channels (foxglove's JSON schemas, web recorders) decode to dicts."""

    def decoder_for(self, message_encoding: str, schema) -> Callable[[bytes], Any] | None:
        return json.loads if message_encoding == "json" else None


class McapBag(Bag):
    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, episode: str = "") -> None:
        self.fs, self.path, self.episode = fs, path, episode
        self._topics: dict[str, str] | None = None

    def _reader(self, handle):
        from mcap.reader import make_reader
        from mcap_ros2.decoder import DecoderFactory

        return make_reader(handle, validate_crcs=True, decoder_factories=[DecoderFactory(), _JsonDecoderFactory()])

    def _guard(self, action: str):
        return _McapErrors(self.path, action, self.episode)

    def topics(self) -> dict[str, str]:
        if self._topics is None:
            with self._guard("reading the summary"), self.fs.open(self.path, "rb") as handle:
                reader = self._reader(handle)
                summary = reader.get_summary()
                if summary is None:  # unindexed file: one pass over the records
                    found = {}
                    for schema, channel, _ in reader.iter_messages(log_time_order=False):
                        found[channel.topic] = schema.name if schema else ""
                    self._topics = found
                else:
                    self._topics = {c.topic: (summary.schemas[c.schema_id].name if c.schema_id in summary.schemas
                                              else "") for c in summary.channels.values()}
        return self._topics

    def metadata(self) -> dict[str, dict[str, str]]:
        with self._guard("reading metadata"), self.fs.open(self.path, "rb") as handle:
            return {m.name: dict(m.metadata) for m in self._reader(handle).iter_metadata()}

    def messages(self, topics, start=None, end=None, decode=True):
        wanted = set(topics) if decode is True else set(decode or ())
        with self._guard("reading messages"), self.fs.open(self.path, "rb") as handle:
            reader = self._reader(handle)
            decoders: dict[int, Callable[[bytes], Any]] = {}
            for schema, channel, message in reader.iter_messages(topics=topics, starting_at=start, ending_at=end):
                decoder = decoders.get(channel.id)
                if decoder is None:
                    decoder = decoders[channel.id] = self._decoder(channel, schema)
                if channel.topic in wanted:
                    yield channel.topic, message.log_time, decoder(message.data)
                else:
                    yield channel.topic, message.log_time, Raw(message.data, decoder)

    def _decoder(self, channel, schema) -> Callable[[bytes], Any]:
        from mcap_ros2.decoder import DecoderFactory

        for factory in (DecoderFactory(), _JsonDecoderFactory()):
            decoder = factory.decoder_for(channel.message_encoding, schema)
            if decoder is not None:
                return decoder
        raise SourceError(self.path, f"no decoder for message encoding {channel.message_encoding!r} "
                          f"(schema {schema.name if schema else None!r})", self.episode, channel.topic)


class _McapErrors:
    """MCAP readers raise many exception types for cut or corrupt files; all become ``SourceError``
    (interrupts and other ``BaseException``s pass through)."""

    def __init__(self, path: str, action: str, episode: str) -> None:
        self.path, self.action, self.episode = path, action, episode

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, (SourceError, GeneratorExit)):
            return False
        # The reader surfaces errors of its own, of struct, and of its compression backends (lz4, zstandard):
        # whatever a cut or corrupt file raises while being read is that file's fault.
        if isinstance(exc, Exception):
            raise SourceError(self.path, f"unreadable MCAP while {self.action} (truncated or corrupt?): "
                              f"{type(exc).__name__}: {exc}", self.episode, "mcap") from exc
        return False


def _deserialize(deserialize, raw: bytes, msgtype: str) -> Any:
    return deserialize(raw, msgtype)


class RosbagsBag(Bag):
    """rosbag2 folders, their .db3/.mcap storage files, and ROS 1 bags, through ``rosbags.highlevel.AnyReader``."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, episode: str = "") -> None:
        if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            raise SourceError(path, "rosbag2 and ROS 1 bags must be local files (copy them first)", episode, "bag")
        self.fs, self.path, self.episode = fs, path, episode

    def _open(self):
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        default = get_typestore(Stores.ROS1_NOETIC if self.path.endswith(ROS1_SUFFIX) else Stores.LATEST)
        try:
            reader = AnyReader([Path(self.path)], default_typestore=default)
            reader.open()
        except Exception as exc:  # rosbags raises its own error types per storage plugin
            raise SourceError(self.path, f"unreadable bag (truncated or corrupt?): {type(exc).__name__}: {exc}",
                              self.episode, "bag") from exc
        return reader

    def topics(self) -> dict[str, str]:
        reader = self._open()
        try:
            return {c.topic: c.msgtype for c in reader.connections}
        finally:
            reader.close()

    def messages(self, topics, start=None, end=None, decode=True):
        reader = self._open()
        try:
            connections = [c for c in reader.connections if c.topic in set(topics)]
            if not connections:
                return
            stop = None if end is None else end + 1
            wanted = set(topics) if decode is True else set(decode or ())
            typestore = reader.typestore  # kept: Raw messages decode after the reader closes
            deserialize = typestore.deserialize_cdr if reader.is2 else typestore.deserialize_ros1
            try:
                for connection, stamp, raw in reader.messages(connections=connections, start=start, stop=stop):
                    decoder = functools.partial(_deserialize, deserialize, msgtype=connection.msgtype)
                    message = decoder(raw) if connection.topic in wanted else Raw(bytes(raw), decoder)
                    yield connection.topic, int(stamp), message
            except SourceError:
                raise
            except Exception as exc:
                raise SourceError(self.path, f"unreadable message (truncated or corrupt?): {type(exc).__name__}: {exc}",
                                  self.episode, "bag") from exc
        finally:
            reader.close()
