from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUNNING: _ClassVar[RunStatus]
    COMPLETED: _ClassVar[RunStatus]
    FAILED: _ClassVar[RunStatus]
    CANCELED: _ClassVar[RunStatus]
RUN_STATUS_UNSPECIFIED: RunStatus
RUNNING: RunStatus
COMPLETED: RunStatus
FAILED: RunStatus
CANCELED: RunStatus

class Value(_message.Message):
    __slots__ = ("number", "integer", "text", "flag")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    text: str
    flag: bool
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., text: _Optional[str] = ..., flag: _Optional[bool] = ...) -> None: ...

class ErrorDetails(_message.Message):
    __slots__ = ("code", "message", "type", "traceback", "exit_code")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    type: str
    traceback: str
    exit_code: int
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., type: _Optional[str] = ..., traceback: _Optional[str] = ..., exit_code: _Optional[int] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("experiment", "display_name", "parent_run_id", "tags", "properties", "run_type", "registered")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    RUN_TYPE_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    display_name: str
    parent_run_id: str
    tags: _containers.ScalarMap[str, str]
    properties: _containers.ScalarMap[str, str]
    run_type: str
    registered: bool
    def __init__(self, experiment: _Optional[str] = ..., display_name: _Optional[str] = ..., parent_run_id: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., properties: _Optional[_Mapping[str, str]] = ..., run_type: _Optional[str] = ..., registered: _Optional[bool] = ...) -> None: ...

class TagsSet(_message.Message):
    __slots__ = ("tags", "removed")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TAGS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.ScalarMap[str, str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tags: _Optional[_Mapping[str, str]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class PropertiesAdded(_message.Message):
    __slots__ = ("properties",)
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    properties: _containers.ScalarMap[str, str]
    def __init__(self, properties: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RunEnded(_message.Message):
    __slots__ = ("status", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: RunStatus
    error: ErrorDetails
    def __init__(self, status: _Optional[_Union[RunStatus, str]] = ..., error: _Optional[_Union[ErrorDetails, _Mapping]] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("started", "tags", "properties", "ended")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    started: RunStarted
    tags: TagsSet
    properties: PropertiesAdded
    ended: RunEnded
    def __init__(self, started: _Optional[_Union[RunStarted, _Mapping]] = ..., tags: _Optional[_Union[TagsSet, _Mapping]] = ..., properties: _Optional[_Union[PropertiesAdded, _Mapping]] = ..., ended: _Optional[_Union[RunEnded, _Mapping]] = ...) -> None: ...

class Scalar(_message.Message):
    __slots__ = ("value", "step")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    value: Value
    step: int
    def __init__(self, value: _Optional[_Union[Value, _Mapping]] = ..., step: _Optional[int] = ...) -> None: ...

class ValueList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Cell(_message.Message):
    __slots__ = ("column", "value")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    column: str
    value: Value
    def __init__(self, column: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("cells",)
    CELLS_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    def __init__(self, cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Table(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class ImageRef(_message.Message):
    __slots__ = ("artifact_path",)
    ARTIFACT_PATH_FIELD_NUMBER: _ClassVar[int]
    artifact_path: str
    def __init__(self, artifact_path: _Optional[str] = ...) -> None: ...

class JsonMetric(_message.Message):
    __slots__ = ("schema_type", "schema_version", "json")
    SCHEMA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    schema_type: str
    schema_version: str
    json: str
    def __init__(self, schema_type: _Optional[str] = ..., schema_version: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class ScalarSeries(_message.Message):
    __slots__ = ("values", "times_unix_nano", "steps")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMES_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    times_unix_nano: _containers.RepeatedScalarFieldContainer[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[float]] = ..., times_unix_nano: _Optional[_Iterable[int]] = ..., steps: _Optional[_Iterable[int]] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("name", "description", "scalar", "list", "row", "table", "image", "json", "series")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SCALAR_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    scalar: Scalar
    list: ValueList
    row: Row
    table: Table
    image: ImageRef
    json: JsonMetric
    series: ScalarSeries
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., scalar: _Optional[_Union[Scalar, _Mapping]] = ..., list: _Optional[_Union[ValueList, _Mapping]] = ..., row: _Optional[_Union[Row, _Mapping]] = ..., table: _Optional[_Union[Table, _Mapping]] = ..., image: _Optional[_Union[ImageRef, _Mapping]] = ..., json: _Optional[_Union[JsonMetric, _Mapping]] = ..., series: _Optional[_Union[ScalarSeries, _Mapping]] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("stream", "data", "line_times_unix_nano", "level", "logger", "partial_tail")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LINE_TIMES_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    LOGGER_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_TAIL_FIELD_NUMBER: _ClassVar[int]
    stream: str
    data: bytes
    line_times_unix_nano: _containers.RepeatedScalarFieldContainer[int]
    level: str
    logger: str
    partial_tail: bool
    def __init__(self, stream: _Optional[str] = ..., data: _Optional[bytes] = ..., line_times_unix_nano: _Optional[_Iterable[int]] = ..., level: _Optional[str] = ..., logger: _Optional[str] = ..., partial_tail: _Optional[bool] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("path", "offset", "data", "last", "sha256", "size", "content_type")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    data: bytes
    last: bool
    sha256: str
    size: int
    content_type: str
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class SeqGap(_message.Message):
    __slots__ = ("last_seq", "reason", "records")
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    last_seq: int
    reason: str
    records: int
    def __init__(self, last_seq: _Optional[int] = ..., reason: _Optional[str] = ..., records: _Optional[int] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("seq", "time_unix_nano", "run_id", "run_event", "metric", "log", "artifact", "gap")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_EVENT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time_unix_nano: int
    run_id: str
    run_event: RunEvent
    metric: Metric
    log: LogChunk
    artifact: ArtifactChunk
    gap: SeqGap
    def __init__(self, seq: _Optional[int] = ..., time_unix_nano: _Optional[int] = ..., run_id: _Optional[str] = ..., run_event: _Optional[_Union[RunEvent, _Mapping]] = ..., metric: _Optional[_Union[Metric, _Mapping]] = ..., log: _Optional[_Union[LogChunk, _Mapping]] = ..., artifact: _Optional[_Union[ArtifactChunk, _Mapping]] = ..., gap: _Optional[_Union[SeqGap, _Mapping]] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("stream_id", "records")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, stream_id: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...
