"""swarmd.node.protocol: health pipe bytes -> worst code per read; output bytes -> bounded lines."""

from __future__ import annotations

import pytest

from swarmd.node.protocol import MAX_HEALTH_LINE, MAX_OUTPUT_LINE, HealthParser, LineSplitter

MB = 1024 * 1024

# --- HealthParser ---------------------------------------------------------------------------


def test_one_code_per_line() -> None:
    batch = HealthParser().feed(b"0\n")
    assert (batch.worst, batch.reports, batch.errors) == (0, 1, [])


@pytest.mark.parametrize(
    "data, worst, reports",
    [
        (b"0\n3\n1\n", 3, 3),
        (b"3\n0\n", 3, 2),
        (b"255\n0\n254\n", 255, 3),
        (b"0\n" * 10_000 + b"7\n" + b"0\n" * 10_000, 7, 20_001),
    ],
)
def test_the_worst_code_of_a_read_wins(data: bytes, worst: int, reports: int) -> None:
    batch = HealthParser().feed(data)
    assert (batch.worst, batch.reports, batch.errors) == (worst, reports, [])


def test_each_read_is_judged_on_its_own() -> None:
    parser = HealthParser()
    assert parser.feed(b"3\n").worst == 3
    assert parser.feed(b"0\n").worst == 0
    assert parser.feed(b"").worst is None


def test_nothing_read_means_no_report() -> None:
    batch = HealthParser().feed(b"")
    assert (batch.worst, batch.reports, batch.errors) == (None, 0, [])


def test_a_partial_line_waits_for_the_next_read() -> None:
    parser = HealthParser()
    first = parser.feed(b"0\n2")
    assert (first.worst, first.reports) == (0, 1)
    assert parser.feed(b"").worst is None
    second = parser.feed(b"5\n")
    assert (second.worst, second.reports, second.errors) == (25, 1, [])


def test_a_code_may_arrive_one_byte_at_a_time() -> None:
    parser = HealthParser()
    batches = [parser.feed(bytes([byte])) for byte in b"128\n"]
    assert [batch.worst for batch in batches] == [None, None, None, 128]
    assert all(batch.errors == [] for batch in batches)


@pytest.mark.parametrize("data, code", [(b"3\r\n", 3), (b" 3 \n", 3), (b"\t4\n", 4),
                                        (b"03\n", 3), (b"000\n", 0)])
def test_surrounding_whitespace_and_leading_zeros_are_tolerated(data: bytes, code: int) -> None:
    assert HealthParser().feed(data).worst == code


@pytest.mark.parametrize(
    "line",
    [
        b"-1",
        b"256",
        b"1000",
        b"0003",
        b"3.0",
        b"+3",
        b"0x3",
        b"three",
        b"",
        b"\x00",
        b"3\x00",
        b"\x003",
        b"\xff\xfe",
        b"3 4",
        "\u0663".encode(),  # ARABIC-INDIC DIGIT THREE is not an ASCII digit
    ],
)
def test_garbage_lines_are_errors_not_reports(line: bytes) -> None:
    batch = HealthParser().feed(line + b"\n")
    assert batch.worst is None
    assert batch.reports == 0
    assert len(batch.errors) == 1
    assert batch.errors[0].startswith("expected a code from 0 to 255 per line, got ")


def test_valid_lines_next_to_garbage_still_count() -> None:
    batch = HealthParser().feed(b"abc\n2\n-1\n0\n\xff\n1\n")
    assert (batch.worst, batch.reports) == (2, 3)
    assert len(batch.errors) == 3


def test_errors_show_invalid_utf8_and_nul_readably() -> None:
    [error] = HealthParser().feed(b"\xff\x00x\n").errors
    assert "\\xff" in error
    assert "\\x00" in error


def test_a_garbage_line_is_shown_cut_short() -> None:
    [error] = HealthParser().feed(b"y" * 500 + b"\n").errors
    assert "y" * 40 in error
    assert "y" * 41 not in error
    assert "..." in error


def test_a_flood_of_one_garbage_line_is_one_error_with_a_count() -> None:
    batch = HealthParser().feed(b"oops\n" * 1000 + b"0\n")
    [error] = batch.errors
    assert error.startswith("expected a code from 0 to 255 per line, got ")
    assert "oops" in error
    assert error.endswith(" (1000 times)")
    assert (batch.worst, batch.reports) == (0, 1)


def test_a_long_partial_line_is_kept_while_it_could_still_be_a_code() -> None:
    parser = HealthParser()
    assert parser.feed(b" " * (MAX_HEALTH_LINE - 1) + b"3").errors == []
    assert parser.feed(b"\n").worst == 3


def test_a_1mb_line_without_newline_is_one_error_then_the_parser_recovers() -> None:
    parser = HealthParser()
    first = parser.feed(b"7" * MB)
    assert first.worst is None
    assert len(first.errors) == 1
    assert "without newline" in first.errors[0]
    more = parser.feed(b"7" * MB)
    assert (more.worst, more.errors) == (None, [])
    # The rest of the long line up to its newline is dropped; what follows counts again.
    after = parser.feed(b"777\n4\n")
    assert (after.worst, after.reports, after.errors) == (4, 1, [])
    assert parser.feed(b"0\n").worst == 0


def test_a_1mb_line_arriving_in_chunks_is_one_error() -> None:
    parser = HealthParser()
    chunks = [b"9" * 65536] * 16 + [b"9\n", b"3\n"]
    batches = [parser.feed(chunk) for chunk in chunks]
    assert sum(len(batch.errors) for batch in batches) == 1
    assert [batch.worst for batch in batches if batch.worst is not None] == [3]


def test_the_newline_ending_a_long_line_may_come_with_the_next_code() -> None:
    parser = HealthParser()
    parser.feed(b"x" * 100)
    batch = parser.feed(b"x\n2\n" + b"y" * 100)
    assert batch.worst == 2
    assert len(batch.errors) == 1  # the next over-long line
    assert parser.feed(b"\n1\n").worst == 1


def test_a_complete_1mb_line_is_one_error() -> None:
    batch = HealthParser().feed(b"5" * MB + b"\n6\n")
    assert (batch.worst, len(batch.errors)) == (6, 1)


def test_close_counts_an_unterminated_valid_code() -> None:
    parser = HealthParser()
    assert parser.feed(b"0\n5").worst == 0
    batch = parser.close()
    assert (batch.worst, batch.reports, batch.errors) == (5, 1, [])


def test_close_reports_unterminated_garbage() -> None:
    parser = HealthParser()
    parser.feed(b"0\nxy")
    batch = parser.close()
    assert batch.worst is None
    [error] = batch.errors
    assert error.startswith("unterminated garbage at end of pipe: ")
    assert "xy" in error


def test_close_with_nothing_pending_is_empty() -> None:
    parser = HealthParser()
    parser.feed(b"1\n")
    batch = parser.close()
    assert (batch.worst, batch.reports, batch.errors) == (None, 0, [])


def test_close_inside_an_over_long_line_adds_no_second_error() -> None:
    parser = HealthParser()
    parser.feed(b"1" * 100)
    batch = parser.close()
    assert (batch.worst, batch.errors) == (None, [])


# --- LineSplitter ---------------------------------------------------------------------------


def test_lines_are_split_on_newlines() -> None:
    assert LineSplitter().feed(b"one\ntwo\n\nthree\n") == ["one", "two", "", "three"]


def test_a_partial_line_waits_for_its_newline() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\nwor") == ["hello"]
    assert splitter.feed(b"ld\n") == ["world"]
    assert splitter.close() == []


def test_close_returns_the_unterminated_rest() -> None:
    splitter = LineSplitter()
    splitter.feed(b"a\nrest")
    assert splitter.close() == ["rest"]
    assert splitter.close() == []


def test_crlf_line_ends_are_stripped() -> None:
    assert LineSplitter().feed(b"dos\r\nunix\n") == ["dos", "unix"]


def test_close_strips_a_trailing_cr_like_feed() -> None:
    splitter = LineSplitter()
    splitter.feed(b"progress\r")
    assert splitter.close() == ["progress"]


def test_invalid_utf8_is_replaced() -> None:
    assert LineSplitter().feed(b"caf\xe9 \xff\n") == ["caf\ufffd \ufffd"]


def test_a_character_split_across_reads_is_decoded_whole() -> None:
    encoded = "naïve ✓\n".encode()
    splitter = LineSplitter()
    lines = [line for byte in encoded for line in splitter.feed(bytes([byte]))]
    assert lines == ["naïve ✓"]


def test_an_unterminated_line_is_flushed_at_the_limit() -> None:
    splitter = LineSplitter(limit=10)
    assert splitter.feed(b"a" * 9) == []
    assert splitter.feed(b"a") == ["a" * 10]
    assert splitter.feed(b"b\n") == ["b"]


def test_the_default_limit() -> None:
    assert MAX_OUTPUT_LINE == 16384
    assert LineSplitter().feed(b"x" * (MAX_OUTPUT_LINE - 1)) == []


@pytest.mark.parametrize(
    "limit, chunks",
    [
        (10, [b"a" * 25 + b"\n"]),
        (10, [b"a" * 6] * 4 + [b"a\n"]),
        (MAX_OUTPUT_LINE, [b"a" * MB]),
    ],
    ids=["one-read", "several-reads", "1mb"],
)
def test_a_very_long_line_is_cut_at_the_limit(limit: int, chunks: list[bytes]) -> None:
    splitter = LineSplitter(limit=limit)
    lines = [line for chunk in chunks for line in splitter.feed(chunk)] + splitter.close()
    assert all(len(line) <= limit for line in lines), [len(line) for line in lines]
    assert "".join(lines) == b"".join(chunks).decode().rstrip("\n")


def test_at_line_start_follows_partial_and_skipped_lines() -> None:
    parser = HealthParser()
    assert parser.at_line_start
    parser.feed(b"0\n3")
    assert not parser.at_line_start
    parser.feed(b"\n")
    assert parser.at_line_start
    parser.feed(b"x" * (MAX_HEALTH_LINE + 1))
    assert not parser.at_line_start  # skipping an over-long line
    parser.feed(b"yy\n")
    assert parser.at_line_start
