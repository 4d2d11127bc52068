from mltrail.proto import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestRequest(_message.Message):
    __slots__ = ("request_id", "batches")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    batches: _containers.RepeatedCompositeFieldContainer[_records_pb2.Batch]
    def __init__(self, request_id: _Optional[int] = ..., batches: _Optional[_Iterable[_Union[_records_pb2.Batch, _Mapping]]] = ...) -> None: ...

class BatchResult(_message.Message):
    __slots__ = ("stream_id", "acked_seq", "code", "message", "retry_after_ms", "stored", "duplicates", "expected_seq")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    acked_seq: int
    code: int
    message: str
    retry_after_ms: int
    stored: int
    duplicates: int
    expected_seq: int
    def __init__(self, stream_id: _Optional[str] = ..., acked_seq: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., retry_after_ms: _Optional[int] = ..., stored: _Optional[int] = ..., duplicates: _Optional[int] = ..., expected_seq: _Optional[int] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("request_id", "results")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    results: _containers.RepeatedCompositeFieldContainer[BatchResult]
    def __init__(self, request_id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[BatchResult, _Mapping]]] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("run_id", "experiment", "display_name", "status", "start_time_unix_nano", "end_time_unix_nano", "tags", "properties", "parent_run_id", "child_run_ids", "error", "run_type", "log_lines", "metric_records", "artifacts", "last_delivery_unix_nano", "metrics")
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
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetricSummary
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetricSummary, _Mapping]] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    END_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CHILD_RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RUN_TYPE_FIELD_NUMBER: _ClassVar[int]
    LOG_LINES_FIELD_NUMBER: _ClassVar[int]
    METRIC_RECORDS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    LAST_DELIVERY_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    experiment: str
    display_name: str
    status: _records_pb2.RunStatus
    start_time_unix_nano: int
    end_time_unix_nano: int
    tags: _containers.ScalarMap[str, str]
    properties: _containers.ScalarMap[str, str]
    parent_run_id: str
    child_run_ids: _containers.RepeatedScalarFieldContainer[str]
    error: _records_pb2.ErrorDetails
    run_type: str
    log_lines: int
    metric_records: int
    artifacts: int
    last_delivery_unix_nano: int
    metrics: _containers.MessageMap[str, MetricSummary]
    def __init__(self, run_id: _Optional[str] = ..., experiment: _Optional[str] = ..., display_name: _Optional[str] = ..., status: _Optional[_Union[_records_pb2.RunStatus, str]] = ..., start_time_unix_nano: _Optional[int] = ..., end_time_unix_nano: _Optional[int] = ..., tags: _Optional[_Mapping[str, str]] = ..., properties: _Optional[_Mapping[str, str]] = ..., parent_run_id: _Optional[str] = ..., child_run_ids: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_records_pb2.ErrorDetails, _Mapping]] = ..., run_type: _Optional[str] = ..., log_lines: _Optional[int] = ..., metric_records: _Optional[int] = ..., artifacts: _Optional[int] = ..., last_delivery_unix_nano: _Optional[int] = ..., metrics: _Optional[_Mapping[str, MetricSummary]] = ...) -> None: ...

class MetricSummary(_message.Message):
    __slots__ = ("latest", "min", "max", "count")
    LATEST_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    latest: float
    min: float
    max: float
    count: int
    def __init__(self, latest: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class RunCondition(_message.Message):
    __slots__ = ("key", "op", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    op: str
    value: str
    def __init__(self, key: _Optional[str] = ..., op: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("experiment", "status", "tags", "limit", "parent_run_id", "page_token", "where", "order_by", "columns")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    status: _records_pb2.RunStatus
    tags: _containers.ScalarMap[str, str]
    limit: int
    parent_run_id: str
    page_token: str
    where: _containers.RepeatedCompositeFieldContainer[RunCondition]
    order_by: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, experiment: _Optional[str] = ..., status: _Optional[_Union[_records_pb2.RunStatus, str]] = ..., tags: _Optional[_Mapping[str, str]] = ..., limit: _Optional[int] = ..., parent_run_id: _Optional[str] = ..., page_token: _Optional[str] = ..., where: _Optional[_Iterable[_Union[RunCondition, _Mapping]]] = ..., order_by: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id", "without_counts")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    without_counts: bool
    def __init__(self, run_id: _Optional[str] = ..., without_counts: _Optional[bool] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ("run_id", "name")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    name: str
    def __init__(self, run_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class MetricRecord(_message.Message):
    __slots__ = ("time_unix_nano", "metric")
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    time_unix_nano: int
    metric: _records_pb2.Metric
    def __init__(self, time_unix_nano: _Optional[int] = ..., metric: _Optional[_Union[_records_pb2.Metric, _Mapping]] = ...) -> None: ...

class GetMetricsResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[MetricRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[MetricRecord, _Mapping]]] = ...) -> None: ...

class ReadSeriesRequest(_message.Message):
    __slots__ = ("run_id", "name", "step_min", "step_max", "time_min_unix_nano", "time_max_unix_nano", "buckets", "values_only")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_MIN_FIELD_NUMBER: _ClassVar[int]
    STEP_MAX_FIELD_NUMBER: _ClassVar[int]
    TIME_MIN_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    TIME_MAX_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    VALUES_ONLY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    name: str
    step_min: int
    step_max: int
    time_min_unix_nano: int
    time_max_unix_nano: int
    buckets: int
    values_only: bool
    def __init__(self, run_id: _Optional[str] = ..., name: _Optional[str] = ..., step_min: _Optional[int] = ..., step_max: _Optional[int] = ..., time_min_unix_nano: _Optional[int] = ..., time_max_unix_nano: _Optional[int] = ..., buckets: _Optional[int] = ..., values_only: _Optional[bool] = ...) -> None: ...

class PackedPoints(_message.Message):
    __slots__ = ("count", "steps", "step_present", "times", "kinds", "numbers", "integers", "texts", "flags", "floats")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_PRESENT_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    INTEGERS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    FLOATS_FIELD_NUMBER: _ClassVar[int]
    count: int
    steps: bytes
    step_present: bytes
    times: bytes
    kinds: bytes
    numbers: bytes
    integers: bytes
    texts: _containers.RepeatedScalarFieldContainer[str]
    flags: bytes
    floats: bytes
    def __init__(self, count: _Optional[int] = ..., steps: _Optional[bytes] = ..., step_present: _Optional[bytes] = ..., times: _Optional[bytes] = ..., kinds: _Optional[bytes] = ..., numbers: _Optional[bytes] = ..., integers: _Optional[bytes] = ..., texts: _Optional[_Iterable[str]] = ..., flags: _Optional[bytes] = ..., floats: _Optional[bytes] = ...) -> None: ...

class SeriesBucket(_message.Message):
    __slots__ = ("count", "first_step", "last_step", "first_time_unix_nano", "last_time_unix_nano", "has_values", "first", "last", "min", "max")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_STEP_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    FIRST_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    LAST_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    HAS_VALUES_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    count: int
    first_step: int
    last_step: int
    first_time_unix_nano: int
    last_time_unix_nano: int
    has_values: bool
    first: float
    last: float
    min: float
    max: float
    def __init__(self, count: _Optional[int] = ..., first_step: _Optional[int] = ..., last_step: _Optional[int] = ..., first_time_unix_nano: _Optional[int] = ..., last_time_unix_nano: _Optional[int] = ..., has_values: _Optional[bool] = ..., first: _Optional[float] = ..., last: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class ReadSeriesResponse(_message.Message):
    __slots__ = ("name", "points", "records", "buckets", "has_records")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    HAS_RECORDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    points: PackedPoints
    records: _containers.RepeatedCompositeFieldContainer[MetricRecord]
    buckets: _containers.RepeatedCompositeFieldContainer[SeriesBucket]
    has_records: bool
    def __init__(self, name: _Optional[str] = ..., points: _Optional[_Union[PackedPoints, _Mapping]] = ..., records: _Optional[_Iterable[_Union[MetricRecord, _Mapping]]] = ..., buckets: _Optional[_Iterable[_Union[SeriesBucket, _Mapping]]] = ..., has_records: _Optional[bool] = ...) -> None: ...

class TailLogsRequest(_message.Message):
    __slots__ = ("run_id", "streams", "from_line", "to_line", "follow")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    FROM_LINE_FIELD_NUMBER: _ClassVar[int]
    TO_LINE_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    streams: _containers.RepeatedScalarFieldContainer[str]
    from_line: int
    to_line: int
    follow: bool
    def __init__(self, run_id: _Optional[str] = ..., streams: _Optional[_Iterable[str]] = ..., from_line: _Optional[int] = ..., to_line: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("stream", "line", "time_unix_nano", "text", "level", "logger")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    LOGGER_FIELD_NUMBER: _ClassVar[int]
    stream: str
    line: int
    time_unix_nano: int
    text: str
    level: str
    logger: str
    def __init__(self, stream: _Optional[str] = ..., line: _Optional[int] = ..., time_unix_nano: _Optional[int] = ..., text: _Optional[str] = ..., level: _Optional[str] = ..., logger: _Optional[str] = ...) -> None: ...

class TailLogsResponse(_message.Message):
    __slots__ = ("lines", "run_status", "end")
    LINES_FIELD_NUMBER: _ClassVar[int]
    RUN_STATUS_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[LogLine]
    run_status: _records_pb2.RunStatus
    end: bool
    def __init__(self, lines: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ..., run_status: _Optional[_Union[_records_pb2.RunStatus, str]] = ..., end: _Optional[bool] = ...) -> None: ...

class ArtifactInfo(_message.Message):
    __slots__ = ("path", "size", "sha256", "content_type", "time_unix_nano")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    sha256: str
    content_type: str
    time_unix_nano: int
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., content_type: _Optional[str] = ..., time_unix_nano: _Optional[int] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ("run_id", "limit", "page_token")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    limit: int
    page_token: str
    def __init__(self, run_id: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("artifacts", "next_page_token")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactInfo]
    next_page_token: str
    def __init__(self, artifacts: _Optional[_Iterable[_Union[ArtifactInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DownloadArtifactRequest(_message.Message):
    __slots__ = ("run_id", "path")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    path: str
    def __init__(self, run_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ArtifactData(_message.Message):
    __slots__ = ("data", "info")
    DATA_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    info: ArtifactInfo
    def __init__(self, data: _Optional[bytes] = ..., info: _Optional[_Union[ArtifactInfo, _Mapping]] = ...) -> None: ...

class RunBundleRequest(_message.Message):
    __slots__ = ("run_id", "with_artifacts", "max_bytes", "redact", "requested_by", "agent_seconds")
    class RequestedByEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    REDACT_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    AGENT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    with_artifacts: bool
    max_bytes: int
    redact: _containers.RepeatedScalarFieldContainer[str]
    requested_by: _containers.ScalarMap[str, str]
    agent_seconds: float
    def __init__(self, run_id: _Optional[str] = ..., with_artifacts: _Optional[bool] = ..., max_bytes: _Optional[int] = ..., redact: _Optional[_Iterable[str]] = ..., requested_by: _Optional[_Mapping[str, str]] = ..., agent_seconds: _Optional[float] = ...) -> None: ...

class BundleChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class DeleteRunsRequest(_message.Message):
    __slots__ = ("run_ids",)
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteRunsResponse(_message.Message):
    __slots__ = ("deleted", "metric_records", "log_lines", "artifacts")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    METRIC_RECORDS_FIELD_NUMBER: _ClassVar[int]
    LOG_LINES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedScalarFieldContainer[str]
    metric_records: int
    log_lines: int
    artifacts: int
    def __init__(self, deleted: _Optional[_Iterable[str]] = ..., metric_records: _Optional[int] = ..., log_lines: _Optional[int] = ..., artifacts: _Optional[int] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("name", "workspace", "role", "token_id", "created_unix_nano", "expires_unix_nano", "revoked_unix_nano")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    REVOKED_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    name: str
    workspace: str
    role: str
    token_id: str
    created_unix_nano: int
    expires_unix_nano: int
    revoked_unix_nano: int
    def __init__(self, name: _Optional[str] = ..., workspace: _Optional[str] = ..., role: _Optional[str] = ..., token_id: _Optional[str] = ..., created_unix_nano: _Optional[int] = ..., expires_unix_nano: _Optional[int] = ..., revoked_unix_nano: _Optional[int] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("workspace", "role", "name", "expires_in_seconds")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    role: str
    name: str
    expires_in_seconds: int
    def __init__(self, workspace: _Optional[str] = ..., role: _Optional[str] = ..., name: _Optional[str] = ..., expires_in_seconds: _Optional[int] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("info", "token")
    INFO_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    info: TokenInfo
    token: str
    def __init__(self, info: _Optional[_Union[TokenInfo, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("workspace",)
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    def __init__(self, workspace: _Optional[str] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
