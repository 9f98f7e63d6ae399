"""TFDS ``features.json`` / ``dataset_info.json``: shapes, dtypes and image encodings per flattened key.

TFDS flattens nested features into ``tf.train.Example`` keys joined by ``/`` (``steps/observation/
image_0``); the values of a ``Dataset`` feature (RLDS ``steps``) are concatenated over its steps.
When ``features.json`` is absent, the kind of every key is inferred from the Example itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from connectors.base import DatasetError

_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "int8": np.int8, "int16": np.int16,
           "int32": np.int32, "int64": np.int64, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32,
           "uint64": np.uint64, "bool": np.bool_}
_SHARD = re.compile(r"^(?P<name>.+)-(?P<split>[^-.]+)\.(?P<fmt>tfrecord|riegeli|array_record)"
                    r"(?:-(?P<shard>\d+)-of-(?P<total>\d+))?$")


@dataclass(frozen=True)
class FeatureSpec:
    """One flattened feature: ``kind`` is tensor, image or text; ``per_step`` for RLDS ``steps``."""

    key: str
    kind: str
    dtype: str = "float32"
    shape: tuple[int, ...] = ()
    encoding: str = "none"  # tensors: none | bytes | zlib; images: jpeg | png | ...
    per_step: bool = False
    shape_known: bool = True  # False when inferred from the Example: the width comes from the value count


@dataclass
class DatasetInfo:
    name: str = ""
    version: str = ""
    splits: dict[str, list[int]] = field(default_factory=dict)  # split -> shard lengths
    features: dict[str, FeatureSpec] = field(default_factory=dict)


def parse_shard_name(file_name: str) -> tuple[str, str] | None:
    """(dataset name, split) of a TFDS shard file name, or None when it is not one."""
    match = _SHARD.match(file_name)
    if not match or match.group("fmt") != "tfrecord":
        return None
    return match.group("name"), match.group("split")


def parse_dataset_info(info: dict) -> DatasetInfo:
    out = DatasetInfo(name=str(info.get("name", "")), version=str(info.get("version", "")))
    for split in info.get("splits") or []:
        if isinstance(split, dict) and "name" in split:
            out.splits[str(split["name"])] = [int(x) for x in split.get("shardLengths") or []]
    return out


def parse_features(doc: dict, where: str) -> dict[str, FeatureSpec]:
    """Flattened feature specs from a ``features.json`` document (TFDS proto-JSON form)."""
    if "featuresDict" not in doc:
        raise DatasetError(where, "features.json is not a TFDS FeaturesDict (no 'featuresDict')")
    specs: dict[str, FeatureSpec] = {}
    _walk(doc, "", False, specs, where)
    return specs


def _dims(node: dict) -> tuple[int, ...]:
    dims = (node.get("shape") or {}).get("dimensions") or []
    return tuple(int(d) for d in dims)


def _walk(node: dict, prefix: str, per_step: bool, specs: dict[str, FeatureSpec], where: str) -> None:
    if "featuresDict" in node:
        for name, child in (node["featuresDict"].get("features") or {}).items():
            _walk(child, f"{prefix}{name}/", per_step, specs, where)
        return
    key = prefix.rstrip("/")
    if "sequence" in node:
        _walk(node["sequence"].get("feature") or {}, prefix, True, specs, where)
    elif "image" in node:
        image = node["image"]
        specs[key] = FeatureSpec(key, "image", str(image.get("dtype", "uint8")), _dims(image),
                                 str(image.get("encodingFormat") or "png"), per_step)
    elif "tensor" in node:
        tensor = node["tensor"]
        dtype = str(tensor.get("dtype", "float32"))
        if dtype == "string":
            specs[key] = FeatureSpec(key, "text", "string", _dims(tensor), per_step=per_step)
        else:
            specs[key] = FeatureSpec(key, "tensor", dtype, _dims(tensor), str(tensor.get("encoding") or "none"),
                                     per_step)
    elif "text" in node:
        specs[key] = FeatureSpec(key, "text", "string", (), per_step=per_step)
    elif "classLabel" in node:
        specs[key] = FeatureSpec(key, "tensor", "int64", (), per_step=per_step)
    # Other feature kinds (bounding boxes, audio...) are inferred from the Example when met.


def numpy_dtype(spec: FeatureSpec) -> np.dtype:
    try:
        return np.dtype(_DTYPES[spec.dtype])
    except KeyError:
        raise ValueError(f"unsupported dtype {spec.dtype!r}") from None
