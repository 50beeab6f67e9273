"""Property tests of the pipe parsers against simple reference models: any bytes, cut into any
chunks, never raise, keep at most a bounded partial line, and give what the model says.

HealthParser's model: a line is a report when, stripped of ASCII whitespace, it is 1 to 3
digits of at most 255; a line is dropped (as over-long) when at the end of some read more than
MAX_HEALTH_LINE of its bytes had arrived without its newline. LineSplitter's model: the lines of
the whole stream, each cut into pieces of `limit` bytes from its start.
"""

from __future__ import annotations

import re
from itertools import accumulate

from hypothesis import given
from hypothesis import strategies as st

from swarmd.node.protocol import MAX_HEALTH_LINE, HealthParser, LineSplitter
from tests.fuzz import FUZZ

_CODE = re.compile(rb"[ \t\n\r\x0b\x0c]*([0-9]{1,3})[ \t\n\r\x0b\x0c]*")

health_bytes = st.lists(st.sampled_from([b"0", b"3", b"25", b"255", b"256", b"00", b"007",
                                         b"\n", b" ", b"\t", b"\r", b"x", b"-1", b"\xff",
                                         b"0\n" * 5, b"9" * 20, b" " * 20]),
                        max_size=60).map(b"".join) | st.binary(max_size=200)


@st.composite
def chunked(draw: st.DrawFn, data: st.SearchStrategy[bytes]) -> list[bytes]:
    """`data` cut at arbitrary places."""
    blob = draw(data)
    cuts = sorted(draw(st.lists(st.integers(0, len(blob)), max_size=8)))
    edges = [0, *cuts, len(blob)]
    return [blob[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def code_of(line: bytes) -> int | None:
    match = _CODE.fullmatch(line)
    if match is None or int(match.group(1)) > 255:
        return None
    return int(match.group(1))


def health_model(chunks: list[bytes], closed: bool) -> tuple[int | None, int]:
    """(worst code, reports) the whole stream holds, read in these chunks."""
    stream = b"".join(chunks)
    boundaries = list(accumulate(len(chunk) for chunk in chunks))
    worst, reports, start = None, 0, 0
    while start < len(stream):
        newline = stream.find(b"\n", start)
        end = len(stream) if newline < 0 else newline
        dropped = any(start <= b <= end and b - start > MAX_HEALTH_LINE for b in boundaries)
        if not dropped and (newline >= 0 or closed):
            code = code_of(stream[start:end])
            if code is not None:
                worst = code if worst is None else max(worst, code)
                reports += 1
        if newline < 0:
            break
        start = newline + 1
    return worst, reports


@FUZZ
@given(chunks=chunked(health_bytes), closed=st.booleans())
def test_the_health_parser_folds_any_chunks_as_the_model_does(chunks: list[bytes],
                                                              closed: bool) -> None:
    parser = HealthParser()
    worst: int | None = None
    reports = 0
    batches = [parser.feed(chunk) for chunk in chunks]
    for batch in batches:
        assert len(parser._partial) <= MAX_HEALTH_LINE  # memory: a bounded partial line
        assert len(batch.errors) <= 2 + len(set(b"".join(chunks).split(b"\n")))
    if closed:
        batches.append(parser.close())
    for batch in batches:
        if batch.worst is not None:
            worst = batch.worst if worst is None else max(worst, batch.worst)
        reports += batch.reports
    assert (worst, reports) == health_model(chunks, closed)


def lines_model(stream: bytes, limit: int, closed: bool) -> list[str]:
    *complete, last = stream.split(b"\n")
    pieces: list[bytes] = []
    for line in complete:
        pieces.extend([line[i:i + limit] for i in range(0, len(line), limit)] or [b""])
    whole = len(last) - len(last) % limit  # an unterminated line's full pieces go at once
    pieces.extend(last[i:i + limit] for i in range(0, whole, limit))
    if closed and whole < len(last):
        pieces.append(last[whole:])
    return [piece.decode("utf-8", "replace").rstrip("\r") for piece in pieces]


output_bytes = st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r\n", b"\xc3\xa9", b"\xff",
                                         b"\x00", b"abcd", b"wxyz\n"]),
                        max_size=60).map(b"".join) | st.binary(max_size=200)


@FUZZ
@given(chunks=chunked(output_bytes), limit=st.integers(1, 8), closed=st.booleans())
def test_the_line_splitter_gives_the_models_lines_for_any_chunks(chunks: list[bytes],
                                                                 limit: int,
                                                                 closed: bool) -> None:
    splitter = LineSplitter(limit=limit)
    out: list[str] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
        assert len(splitter._partial) < limit  # memory: less than one piece is kept
    if closed:
        out.extend(splitter.close())
    assert out == lines_model(b"".join(chunks), limit, closed)


def test_a_line_of_exactly_the_limit_split_from_its_newline_is_one_line() -> None:
    """A node prints a line of exactly MAX_OUTPUT_LINE bytes and the pipe read ends before its
    newline: the full piece goes out at once, then the newline alone makes an empty line (an
    extra empty journal entry). Read whole, the same bytes give one line."""
    whole = LineSplitter(limit=4).feed(b"abcd\n")
    split = LineSplitter(limit=4)
    assert split.feed(b"abcd") + split.feed(b"\n") == whole == ["abcd"]
