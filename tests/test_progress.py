"""The preload progress display, driven by a stepped clock into a StringIO."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from syncd.cli.progress import Progress

KOLKATA = ZoneInfo("Asia/Kolkata")


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def plain(
    total: int, *, done: int = 0, tz: ZoneInfo | None = None
) -> tuple[Progress, io.StringIO, Clock]:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(total, stream, tty=False, clock=clock, label="task", done=done, tz=tz)
    return progress, stream, clock


def terminal(total: int) -> tuple[Progress, io.StringIO, Clock]:
    stream, clock = io.StringIO(), Clock()
    return Progress(total, stream, tty=True, clock=clock, label="task"), stream, clock


def frames(stream: io.StringIO) -> list[str]:
    """The successive terminal lines, without carriage return, clear-to-end and newline."""
    return [f.removesuffix("\n").removesuffix("\x1b[K") for f in stream.getvalue().split("\r")[1:]]


def test_without_a_terminal_each_chunk_done_is_one_plain_line() -> None:
    progress, stream, clock = plain(24, tz=KOLKATA)
    clock.now += 100
    progress.chunk_done(at("2024-08-31 18:30:00"), at("2024-09-30 18:30:00"), 51_234)
    progress.close()
    assert stream.getvalue() == (
        "task: chunk 1/24 2024-09-01 00:00:00+05:30..2024-10-01 00:00:00+05:30 done, "
        "51,234 records (51,234 in all, 512 rec/s, ETA 0:38:20)\n"
    )


def test_without_a_zone_chunk_edges_are_shown_as_passed() -> None:
    progress, stream, clock = plain(2)
    clock.now += 1
    progress.chunk_done(at("2024-01-01 00:00:00"), at("2024-02-01 00:00:00"), 0)
    assert "2024-01-01 00:00:00+00:00..2024-02-01 00:00:00+00:00 done, 0 records" in (
        stream.getvalue()
    )


def test_rate_is_all_records_over_elapsed_time_and_eta_is_remaining_times_mean_chunk() -> None:
    progress, stream, clock = plain(10)
    clock.now += 30
    progress.chunk_done(at("2024-01-01"), at("2024-02-01"), 3_000)
    clock.now += 10
    progress.chunk_done(at("2024-02-01"), at("2024-03-01"), 1_000)
    # 4,000 records in 40 s; 2 chunks in 40 s is 20 s each, 8 to go: 160 s.
    assert (
        stream.getvalue()
        .splitlines()[1]
        .endswith("done, 1,000 records (4,000 in all, 100 rec/s, ETA 0:02:40)")
    )


def test_records_reported_during_a_chunk_are_not_counted_twice() -> None:
    progress, stream, clock = plain(2)
    progress.records(600)
    progress.records(400)
    clock.now += 10
    progress.chunk_done(at("2024-01-01"), at("2024-02-01"), 1_000)
    assert "(1,000 in all, 100 rec/s" in stream.getvalue()


def test_the_last_chunk_has_no_time_left_and_long_etas_show_hours() -> None:
    progress, stream, clock = plain(1000)
    clock.now += 100
    progress.chunk_done(at("2024-01-01"), at("2024-01-02"), 1)
    assert "ETA 27:45:00" in stream.getvalue()  # 999 × 100 s
    progress, stream, clock = plain(1)
    clock.now += 5
    progress.chunk_done(at("2024-01-01"), at("2024-01-02"), 1)
    assert "ETA 0:00:00" in stream.getvalue()


def test_chunks_done_by_an_earlier_run_fill_the_count_but_not_the_rate() -> None:
    progress, stream, clock = plain(24, done=8)
    clock.now += 50
    progress.chunk_done(at("2024-09-01"), at("2024-10-01"), 5_000)
    assert "chunk 9/24" in stream.getvalue()
    assert "(5,000 in all, 100 rec/s, ETA 0:12:30)" in stream.getvalue()  # 15 × 50 s


def test_on_a_terminal_one_line_is_rewritten_in_place() -> None:
    progress, stream, clock = terminal(24)
    clock.now += 90
    for month in range(1, 10):
        progress.chunk_done(at(f"2024-{month:02}-01"), at(f"2024-{month + 1:02}-01"), 10_000)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\x1b[K\n")
    assert text.count("\n") == 1
    assert frames(stream)[-1] == (
        "task  [#######-------------]  9/24 chunks  90,000 records  1,000 rec/s  ETA 0:02:30"
    )


def test_the_terminal_line_shows_records_of_the_running_chunk() -> None:
    progress, stream, clock = terminal(4)
    clock.now += 1
    progress.records(500)
    assert frames(stream) == [
        "task  [--------------------]  0/4 chunks  500 records  500 rec/s  ETA -"
    ]


def test_the_terminal_eta_counts_down_between_chunks() -> None:
    progress, stream, clock = terminal(3)
    clock.now += 60
    progress.chunk_done(at("2024-01-01"), at("2024-02-01"), 0)
    clock.now += 45
    progress.records(1)
    assert frames(stream)[-1].endswith("ETA 0:01:15")  # 2 × 60 s - 45 s
    clock.now += 600
    progress.records(1)
    assert frames(stream)[-1].endswith("ETA 0:00:00")  # late, never negative


def test_terminal_redraws_are_throttled_to_ten_a_second() -> None:
    progress, stream, clock = terminal(100)
    for _ in range(50):  # 50 updates within 0.25 s
        progress.records(1)
        clock.now += 0.005
    assert len(frames(stream)) == 3  # at 0, 0.1 and 0.2 s
    progress.close()  # the final state is always drawn
    assert frames(stream)[-1].startswith("task  [--------------------]  0/100 chunks  50 records")


def test_zero_chunks_is_a_full_bar_with_nothing_left() -> None:
    progress, stream, _ = terminal(0)
    progress.close()
    assert frames(stream) == [
        "task  [####################]  0/0 chunks  0 records  - rec/s  ETA 0:00:00"
    ]
    progress, stream, _ = plain(0)
    progress.close()
    assert stream.getvalue() == ""


def test_close_ends_the_line_once() -> None:
    progress, stream, _ = terminal(2)
    progress.close()
    progress.close()
    assert stream.getvalue().count("\n") == 1


def test_tty_defaults_to_whether_the_stream_is_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    on_terminal, in_a_pipe = Terminal(), io.StringIO()
    Progress(1, on_terminal, clock=Clock()).close()
    Progress(1, in_a_pipe, clock=Clock()).close()
    assert on_terminal.getvalue().startswith("\r[")
    assert in_a_pipe.getvalue() == ""
