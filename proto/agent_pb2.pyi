from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AppendRequest(_message.Message):
    __slots__ = ("stream_id", "first_seq", "last_seq", "batch", "droppable")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    DROPPABLE_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    first_seq: int
    last_seq: int
    batch: bytes
    droppable: bool
    def __init__(self, stream_id: _Optional[str] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., batch: _Optional[bytes] = ..., droppable: _Optional[bool] = ...) -> None: ...

class AppendAck(_message.Message):
    __slots__ = ("stream_id", "acked_seq", "error", "code", "retry_after_ms")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    acked_seq: int
    error: str
    code: int
    retry_after_ms: int
    def __init__(self, stream_id: _Optional[str] = ..., acked_seq: _Optional[int] = ..., error: _Optional[str] = ..., code: _Optional[int] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class WaitForwardedRequest(_message.Message):
    __slots__ = ("stream_id", "seq", "timeout_seconds")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    seq: int
    timeout_seconds: float
    def __init__(self, stream_id: _Optional[str] = ..., seq: _Optional[int] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class WaitForwardedResponse(_message.Message):
    __slots__ = ("forwarded_seq", "done")
    FORWARDED_SEQ_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    forwarded_seq: int
    done: bool
    def __init__(self, forwarded_seq: _Optional[int] = ..., done: _Optional[bool] = ...) -> None: ...

class AgentInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("collector", "spool_dir", "version", "spool_bytes", "collector_connected", "http")
    COLLECTOR_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DIR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SPOOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    collector: str
    spool_dir: str
    version: str
    spool_bytes: int
    collector_connected: bool
    http: str
    def __init__(self, collector: _Optional[str] = ..., spool_dir: _Optional[str] = ..., version: _Optional[str] = ..., spool_bytes: _Optional[int] = ..., collector_connected: _Optional[bool] = ..., http: _Optional[str] = ...) -> None: ...
