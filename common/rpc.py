"""gRPC options shared by every mltrail server and channel.

``MAX_MESSAGE`` is the one message limit (the SDK, agent and collector must
agree on it). ``BULK_READS`` makes a server read large requests in big
pieces: gRPC's default reads 8 KiB per system call, which costs the agent
and the collector more CPU in the kernel than in Python for console output
(about 12,000 reads per 95 MiB; with these, about 1,000).
"""

from __future__ import annotations

MAX_MESSAGE = 64 * 1024 * 1024
# One SDK record at most (the SDK refuses a larger one at the call or in its
# sender), and one SDK batch as the agent accepts it: a batch holds either
# records up to the SDK's batch size or one record alone, plus its envelope.
# Both stay well under MAX_MESSAGE, so a refusal is an answer, not an abort.
MAX_RECORD_BYTES = 32 * 1024 * 1024
MAX_APPEND_BYTES = MAX_RECORD_BYTES + 1024 * 1024

MESSAGE_LIMITS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]

BULK_READS: list[tuple[str, int]] = [
    ("grpc.experimental.tcp_min_read_chunk_size", 256 * 1024),
    ("grpc.experimental.tcp_read_chunk_size", 1024 * 1024),
    ("grpc.experimental.tcp_max_read_chunk_size", 4 * 1024 * 1024),
]
