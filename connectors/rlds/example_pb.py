"""``tf.train.Example`` as protobuf message classes, built from a hand-written descriptor.

TensorFlow is not needed to read RLDS: the wire format is plain protobuf, and these messages have
the same field numbers and packing as ``tensorflow/core/example/{example,feature}.proto``.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "actionreel.tfexample"


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="actionreel/tfexample.proto", package=_PACKAGE, syntax="proto3")
    field = descriptor_pb2.FieldDescriptorProto
    packed = descriptor_pb2.FieldOptions(packed=True)
    for name, kind, options in (("BytesList", field.TYPE_BYTES, None), ("FloatList", field.TYPE_FLOAT, packed),
                                ("Int64List", field.TYPE_INT64, packed)):
        msg = fdp.message_type.add(name=name)
        value = msg.field.add(name="value", number=1, label=field.LABEL_REPEATED, type=kind)
        if options is not None:
            value.options.CopyFrom(options)
    feature = fdp.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"),
                                                 ("int64_list", "Int64List")), 1):
        feature.field.add(name=name, number=number, label=field.LABEL_OPTIONAL, type=field.TYPE_MESSAGE,
                          type_name=f".{_PACKAGE}.{type_name}", oneof_index=0)
    features = fdp.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=field.LABEL_OPTIONAL, type=field.TYPE_STRING)
    entry.field.add(name="value", number=2, label=field.LABEL_OPTIONAL, type=field.TYPE_MESSAGE,
                    type_name=f".{_PACKAGE}.Feature")
    features.field.add(name="feature", number=1, label=field.LABEL_REPEATED, type=field.TYPE_MESSAGE,
                       type_name=f".{_PACKAGE}.Features.FeatureEntry")
    example = fdp.message_type.add(name="Example")
    example.field.add(name="features", number=1, label=field.LABEL_OPTIONAL, type=field.TYPE_MESSAGE,
                      type_name=f".{_PACKAGE}.Features")
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
Example = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Example"))
Feature = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Feature"))

__all__ = ["Example", "Feature"]
