"""The Prometheus remote write/read messages, declared by xtsdb in code.

The field numbers and types are Prometheus' published wire format (its
``prompb/types.proto`` and ``prompb/remote.proto``, protocol version 0.1.0);
the declarations are written here, not copied. They are built as a
``FileDescriptorProto`` and turned into classes by the ``protobuf`` runtime's
``message_factory``: no ``protoc`` at build time and no generated module to
keep in step with a ``.proto`` file, so nothing can drift between the two.

Only what xtsdb reads or writes is declared. Fields a sender may add that are
not declared (exemplars and native histograms in ``TimeSeries``, metadata in
``WriteRequest``) are kept by the runtime as unknown fields and ignored.

``*View`` and ``SampleColumns`` are *views* of the same bytes, used by the
columnar decoder (:mod:`.prom_remote`, :mod:`.prom_samples`):
``TimeSeriesView`` reads each label and each sample of a series as its raw
encoded bytes (the runtime still splits the fields; a label's bytes are the
cache key of a series' name), and ``SampleColumns`` reads the concatenation of
many sample encodings as two repeated columns, because parsing concatenated
messages appends their repeated fields (``LabelColumns`` the same for labels).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "xtsdb.prometheus"

# (name, number, type, label, message or enum type name or None)
_Field = tuple[str, int, int, int, str | None]
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_DOUBLE, _INT64, _STRING, _BYTES = _F.TYPE_DOUBLE, _F.TYPE_INT64, _F.TYPE_STRING, _F.TYPE_BYTES
_BOOL, _MSG, _ENUM = _F.TYPE_BOOL, _F.TYPE_MESSAGE, _F.TYPE_ENUM

_MESSAGES: dict[str, list[_Field]] = {
    "Sample": [("value", 1, _DOUBLE, _OPT, None), ("timestamp", 2, _INT64, _OPT, None)],
    "Label": [("name", 1, _STRING, _OPT, None), ("value", 2, _STRING, _OPT, None)],
    "TimeSeries": [
        ("labels", 1, _MSG, _REP, "Label"),
        ("samples", 2, _MSG, _REP, "Sample"),
    ],
    "WriteRequest": [("timeseries", 1, _MSG, _REP, "TimeSeries")],
    "LabelMatcher": [
        ("type", 1, _ENUM, _OPT, "LabelMatcher.Type"),
        ("name", 2, _STRING, _OPT, None),
        ("value", 3, _STRING, _OPT, None),
    ],
    "ReadHints": [
        ("step_ms", 1, _INT64, _OPT, None),
        ("func", 2, _STRING, _OPT, None),
        ("start_ms", 3, _INT64, _OPT, None),
        ("end_ms", 4, _INT64, _OPT, None),
        ("grouping", 5, _STRING, _REP, None),
        ("by", 6, _BOOL, _OPT, None),
        ("range_ms", 7, _INT64, _OPT, None),
    ],
    "Query": [
        ("start_timestamp_ms", 1, _INT64, _OPT, None),
        ("end_timestamp_ms", 2, _INT64, _OPT, None),
        ("matchers", 3, _MSG, _REP, "LabelMatcher"),
        ("hints", 4, _MSG, _OPT, "ReadHints"),
    ],
    "ReadRequest": [
        ("queries", 1, _MSG, _REP, "Query"),
        ("accepted_response_types", 2, _ENUM, _REP, "ReadRequest.ResponseType"),
    ],
    "QueryResult": [("timeseries", 1, _MSG, _REP, "TimeSeries")],
    "ReadResponse": [("results", 1, _MSG, _REP, "QueryResult")],
    "Chunk": [
        ("min_time_ms", 1, _INT64, _OPT, None),
        ("max_time_ms", 2, _INT64, _OPT, None),
        ("type", 3, _ENUM, _OPT, "Chunk.Encoding"),
        ("data", 4, _BYTES, _OPT, None),
    ],
    "ChunkedSeries": [
        ("labels", 1, _MSG, _REP, "Label"),
        ("chunks", 2, _MSG, _REP, "Chunk"),
    ],
    "ChunkedReadResponse": [
        ("chunked_series", 1, _MSG, _REP, "ChunkedSeries"),
        ("query_index", 2, _INT64, _OPT, None),
    ],
    # Views for the columnar decoder (same bytes as TimeSeries / WriteRequest).
    "TimeSeriesView": [
        ("labels", 1, _BYTES, _REP, None),
        ("samples", 2, _BYTES, _REP, None),
    ],
    "WriteRequestView": [("timeseries", 1, _MSG, _REP, "TimeSeriesView")],
    "WriteRequestBytes": [("timeseries", 1, _BYTES, _REP, None)],
    "SampleColumns": [("value", 1, _DOUBLE, _REP, None), ("timestamp", 2, _INT64, _REP, None)],
    "LabelColumns": [("name", 1, _BYTES, _REP, None), ("value", 2, _BYTES, _REP, None)],
}

_ENUMS: dict[str, dict[str, list[tuple[str, int]]]] = {
    "LabelMatcher": {"Type": [("EQ", 0), ("NEQ", 1), ("RE", 2), ("NRE", 3)]},
    "ReadRequest": {"ResponseType": [("SAMPLES", 0), ("STREAMED_XOR_CHUNKS", 1)]},
    "Chunk": {"Encoding": [("UNKNOWN", 0), ("XOR", 1), ("HISTOGRAM", 2), ("FLOAT_HISTOGRAM", 3)]},
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(
        name="xtsdb/prometheus_remote.proto", package=_PACKAGE, syntax="proto3"
    )
    for msg_name, fields in _MESSAGES.items():
        msg = fd.message_type.add(name=msg_name)
        for enum_name, values in _ENUMS.get(msg_name, {}).items():
            enum = msg.enum_type.add(name=enum_name)
            for value_name, number in values:
                enum.value.add(name=value_name, number=number)
        for name, number, ftype, label, type_name in fields:
            field = msg.field.add(name=name, number=number, type=ftype, label=label)
            if type_name is not None:
                field.type_name = f".{_PACKAGE}.{type_name}"
    return fd


_POOL = descriptor_pool.DescriptorPool()
_CLASSES = message_factory.GetMessages([_file()], pool=_POOL)


def _cls(name: str) -> Any:
    return _CLASSES[f"{_PACKAGE}.{name}"]


Sample: Any = _cls("Sample")
Label: Any = _cls("Label")
TimeSeries: Any = _cls("TimeSeries")
WriteRequest: Any = _cls("WriteRequest")
LabelMatcher: Any = _cls("LabelMatcher")
ReadHints: Any = _cls("ReadHints")
Query: Any = _cls("Query")
ReadRequest: Any = _cls("ReadRequest")
QueryResult: Any = _cls("QueryResult")
ReadResponse: Any = _cls("ReadResponse")
Chunk: Any = _cls("Chunk")
ChunkedSeries: Any = _cls("ChunkedSeries")
ChunkedReadResponse: Any = _cls("ChunkedReadResponse")
TimeSeriesView: Any = _cls("TimeSeriesView")
WriteRequestView: Any = _cls("WriteRequestView")
WriteRequestBytes: Any = _cls("WriteRequestBytes")
SampleColumns: Any = _cls("SampleColumns")
LabelColumns: Any = _cls("LabelColumns")

# Enum numbers, named as Prometheus names them.
EQ, NEQ, RE, NRE = 0, 1, 2, 3
SAMPLES, STREAMED_XOR_CHUNKS = 0, 1
CHUNK_XOR = 1
