"""LineAssembler: raw console bytes to recorded lines."""

from __future__ import annotations

from mltrail.common.lines import LINE_SPLIT_MARKER, join_split_lines
from mltrail.pipeline.console import LineAssembler, fold_carriage_returns


def feed_all(chunks: list[bytes], max_line: int = 1 << 20) -> tuple[bytes, bytes]:
    asm = LineAssembler(max_line)
    out = b"".join(asm.feed(c) for c in chunks)
    return out, asm.finish()


def test_lines_across_chunk_boundaries_keep_every_byte() -> None:
    data = b"".join(b"line %d \xff\xfe\n" % i for i in range(1000)) + b"tail without newline"
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    out, tail = feed_all(chunks)
    assert out + tail == data
    assert tail == b"tail without newline"


def test_crlf_ends_a_line() -> None:
    out, tail = feed_all([b"a\r\nb\r", b"\nc"])
    assert (out, tail) == (b"a\nb\n", b"c")


def test_progress_bar_is_recorded_as_its_last_state() -> None:
    bar = b"".join(b"\r%3d%%|%s|" % (p, b"#" * (p // 10)) for p in range(101))
    chunks = [bar[i : i + 5] for i in range(0, len(bar), 5)] + [b"\ndone\n"]
    asm = LineAssembler()
    out = b""
    for chunk in chunks:
        out += asm.feed(chunk)
        assert asm.pending <= 20, "a redrawn bar must not pile up in memory"
    assert out == b"100%|##########|\ndone\n"


def test_fold_keeps_plain_lines_untouched() -> None:
    assert fold_carriage_returns(b"x\ny\n") == b"x\ny\n"
    assert fold_carriage_returns(b"a\rb\rc\nd\n") == b"c\nd\n"


def test_overlong_line_is_split_with_marker_and_restorable() -> None:
    line = b"x" * 5000 + b"\n"
    out, tail = feed_all([line[i : i + 300] for i in range(0, len(line), 300)], max_line=1024)
    assert tail == b""
    pieces = out.split(b"\n")[:-1]
    assert len(pieces) == 6 and all(len(p) <= 1024 for p in pieces)
    assert all(p.endswith(LINE_SPLIT_MARKER) for p in pieces[:-1])
    assert join_split_lines(out) == line


def test_overlong_split_does_not_cut_a_utf8_character() -> None:
    line = "é".encode() * 3000 + b"\n"
    out, _ = feed_all([line], max_line=1001)
    for piece in out.split(b"\n")[:-1]:
        piece.removesuffix(LINE_SPLIT_MARKER).decode("utf-8")  # raises if cut mid-character
    assert join_split_lines(out) == line


def test_threads_printing_at_once_are_recorded_in_terminal_order() -> None:
    import random
    import threading
    import time

    from mltrail.pipeline.console import _tee_stream

    class Terminal:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def write(self, text: str) -> int:
            self.lines.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    recorded: list[bytes] = []

    def emit(stream: str, data: bytes, partial: bool, t: int) -> None:
        time.sleep(random.random() / 5000)  # widen the window a race would need
        recorded.extend(data.splitlines())

    terminal = Terminal()
    tee = _tee_stream(terminal, "stdout", emit)

    def printer(n: int) -> None:
        for i in range(200):
            tee.write(f"thread {n} line {i}\n")

    threads = [threading.Thread(target=printer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tee.flush()
    shown = "".join(terminal.lines).splitlines()
    assert len(shown) == 800
    assert [line.decode() for line in recorded] == shown
