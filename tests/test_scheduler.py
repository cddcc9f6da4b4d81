"""The job table of `syncd run`, driven by injected monotonic and wall times only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from syncd.config.model import Schedule
from syncd.db.schedule_state import Due
from syncd.service.scheduler import Scheduler

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
MINUTE = 60.0
HOUR = 3600.0


def every(seconds: float) -> Schedule:
    return Schedule(every=timedelta(seconds=seconds))


def daily(*hhmm: str, zone: ZoneInfo = BERLIN) -> Schedule:
    return Schedule(at=tuple(time.fromisoformat(t) for t in hhmm), timezone=zone)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


class Loop:
    """A stand-in for the daemon's loop: steps injected time by `sleep_for`, never sleeps.

    `mono` starts at 0; the wall clock is `wall0 + mono + offset`, and `jump_wall`
    moves only the offset, like an NTP step or an operator setting the clock."""

    def __init__(
        self,
        scheduler: Scheduler,
        wall0: datetime = T0,
        duration: Callable[[str], float] = lambda name: 1.0,
        late: float = 0.0,
    ) -> None:
        self.s, self.wall0, self.duration, self.late = scheduler, wall0, duration, late
        self.mono = 0.0
        self.offset = timedelta(0)
        self.ends: dict[str, float] = {}  # running entity -> monotonic end
        self.starts: list[tuple[str, float]] = []  # (entity, monotonic start)
        self.start_walls: dict[str, list[datetime]] = {}
        self.peak = 0
        scheduler.start(self.mono, self.wall)

    @property
    def wall(self) -> datetime:
        return self.wall0 + timedelta(seconds=self.mono) + self.offset

    def jump_wall(self, delta: timedelta) -> None:
        self.offset += delta

    def names_started(self) -> list[str]:
        return [name for name, _ in self.starts]

    def run_until(self, end: float) -> None:
        for _ in range(100_000):
            for name in self.s.due(self.mono, self.wall):
                assert name not in self.ends, f"{name} overlaps itself"
                self.starts.append((name, self.mono))
                self.start_walls.setdefault(name, []).append(self.wall)
                self.ends[name] = self.mono + self.duration(name)
            self.peak = max(self.peak, len(self.ends))
            wake = self.s.sleep_for(self.mono, self.wall)
            moments = [*self.ends.values()]
            if wake is not None:
                moments.append(self.mono + wake + self.late)
            if not moments or min(moments) > end:
                self.mono = max(self.mono, end)
                return
            self.mono = min(moments)
            for name, ends_at in sorted(self.ends.items(), key=lambda item: item[1]):
                if ends_at <= self.mono:
                    del self.ends[name]
                    self.s.finished(name, self.mono, self.wall, ok=True)
        raise AssertionError("the loop never reached its end time")


def started_at(loop: Loop, name: str) -> list[float]:
    return [mono for n, mono in loop.starts if n == name]


def sched(
    schedules: Mapping[str, Schedule],
    max_concurrent: int = 4,
    last_success: Mapping[str, datetime | None] | None = None,
) -> Scheduler:
    return Scheduler(schedules, max_concurrent, last_success)


# --- every ---


def test_an_every_entity_runs_at_start() -> None:
    """An `every` entity is due the moment the scheduler starts."""
    s = sched({"task": every(MINUTE)})
    s.start(0.0, T0)
    assert s.due(0.0, T0) == ["task"]


def test_intervals_count_from_the_start_so_run_length_causes_no_drift() -> None:
    """Runs of 10 s every 60 s start at exact multiples of 60 s."""
    loop = Loop(sched({"task": every(MINUTE)}), duration=lambda _: 10.0)
    loop.run_until(10 * MINUTE)
    assert started_at(loop, "task") == [k * MINUTE for k in range(11)]


def test_a_loop_that_wakes_late_does_not_accumulate_drift() -> None:
    """Waking 0.5 s late every time keeps starts at k*60 + 0.5, not k*60.5."""
    loop = Loop(sched({"task": every(MINUTE)}), duration=lambda _: 10.0, late=0.5)
    loop.run_until(10 * MINUTE)
    assert started_at(loop, "task") == [0.0] + [k * MINUTE + 0.5 for k in range(1, 10)]


def test_an_overrun_is_followed_by_one_run_at_once_not_a_burst() -> None:
    """A 150 s run on a 60 s interval is followed by one run at 150 s, then every 60 s."""
    s = sched({"task": every(MINUTE)})
    s.start(0.0, T0)
    assert s.due(0.0, T0) == ["task"]
    for mono in (60.0, 120.0, 149.0):
        assert s.due(mono, T0) == []  # never overlaps itself
    s.finished("task", 150.0, T0, ok=True)
    assert s.sleep_for(150.0, T0) == 0.0
    assert s.due(150.0, T0) == ["task"]
    s.finished("task", 151.0, T0, ok=True)
    assert s.due(151.0, T0) == []
    assert s.sleep_for(151.0, T0) == 59.0


def test_a_failed_run_is_planned_like_a_successful_one() -> None:
    """ok=False plans the next interval; the schedule goes on."""
    s = sched({"task": every(MINUTE)})
    s.start(0.0, T0)
    s.due(0.0, T0)
    s.finished("task", 5.0, T0, ok=False)
    assert s.sleep_for(5.0, T0) == 55.0
    assert s.due(59.9, T0) == []
    assert s.due(60.0, T0) == ["task"]


def test_a_skipped_run_tries_again_at_the_next_due_time() -> None:
    """A run skipped for a held lock is retried at the next interval, not at once."""
    s = sched({"task": every(MINUTE)})
    s.start(0.0, T0)
    s.due(0.0, T0)
    s.skipped("task", 0.1, T0)
    assert s.due(0.1, T0) == []
    assert s.sleep_for(0.1, T0) == pytest.approx(59.9)
    assert s.due(60.0, T0) == ["task"]


def test_finishing_a_run_the_table_never_started_is_ignored() -> None:
    """finished() for an unknown or idle entity changes nothing."""
    s = sched({"task": every(MINUTE)})
    s.start(0.0, T0)
    s.finished("nope", 1.0, T0, ok=True)
    s.finished("task", 1.0, T0, ok=True)
    assert s.due(1.0, T0) == ["task"]


def test_max_concurrent_below_one_is_refused() -> None:
    """A scheduler that could never start anything is a configuration error."""
    with pytest.raises(ValueError, match="max_concurrent"):
        sched({}, max_concurrent=0)


# --- at ---


def test_an_at_entity_runs_at_its_next_time_when_its_last_success_is_recent() -> None:
    """No catch-up when the last success is newer than the last scheduled time."""
    start = utc(2026, 6, 1, 10, 0)  # 12:00 in Berlin
    s = sched({"user": daily("11:00", "14:00")}, last_success={"user": utc(2026, 6, 1, 9, 5)})
    s.start(0.0, start)
    assert s.due(0.0, start) == []
    assert s.sleep_for(0.0, start) == 2 * HOUR
    assert s.due(2 * HOUR, start + timedelta(hours=2)) == ["user"]


def test_a_daily_run_missed_while_down_is_caught_up_once_at_start() -> None:
    """A last success older than the latest scheduled time runs once at start."""
    loop = Loop(
        sched({"user": daily("11:00")}, last_success={"user": utc(2026, 5, 30, 9, 0)}),
        wall0=utc(2026, 6, 1, 10, 0),
    )
    loop.run_until(24 * HOUR)
    assert loop.start_walls["user"] == [utc(2026, 6, 1, 10, 0), utc(2026, 6, 2, 9, 0)]


@pytest.mark.parametrize("last_success", [{}, {"user": None}])
def test_an_at_entity_that_never_succeeded_runs_once_at_start(
    last_success: dict[str, datetime | None],
) -> None:
    """With no last success at all, an `at` entity runs once at start."""
    s = sched({"user": daily("11:00")}, last_success=last_success)
    s.start(0.0, T0)
    assert s.due(0.0, T0) == ["user"]
    s.finished("user", 1.0, T0, ok=True)
    assert s.due(1.0, T0) == []


@pytest.mark.parametrize(
    ("zone", "hhmm", "wall0", "expected"),
    [
        (BERLIN, "02:30", utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]),
        (
            BERLIN,
            "02:30",
            utc(2026, 10, 24, 12),
            [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
        (NEW_YORK, "02:30", utc(2026, 3, 7, 12), [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]),
        (
            NEW_YORK,
            "01:30",
            utc(2026, 10, 31, 12),
            [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],
        ),
    ],
    ids=["berlin-spring", "berlin-fall", "new-york-spring", "new-york-fall"],
)
def test_daily_runs_across_dst_changes_once_per_day(
    zone: ZoneInfo, hhmm: str, wall0: datetime, expected: list[datetime]
) -> None:
    """A missing local time runs once after the gap; a repeated one once, first occurrence."""
    s = sched({"user": daily(hhmm, zone=zone)}, last_success={"user": wall0})
    loop = Loop(s, wall0=wall0, duration=lambda _: 30 * MINUTE)
    loop.run_until(48 * HOUR)
    assert loop.start_walls["user"] == expected


def test_daily_runs_around_midnight_and_the_end_of_the_year() -> None:
    """23:59 and 00:00 in New York run once each across New Year's Eve."""
    wall0 = datetime(2026, 12, 31, 23, 0, tzinfo=NEW_YORK)
    s = sched({"user": daily("23:59", "00:00", zone=NEW_YORK)}, last_success={"user": wall0})
    loop = Loop(s, wall0=wall0, duration=lambda _: 10.0)
    loop.run_until(2 * HOUR)
    assert loop.start_walls["user"] == [
        datetime(2026, 12, 31, 23, 59, tzinfo=NEW_YORK),
        datetime(2027, 1, 1, 0, 0, tzinfo=NEW_YORK),
    ]


def test_a_daily_time_passing_during_a_run_runs_once_after_it() -> None:
    """A daily entity still running at its next time runs once when it ends."""
    s = sched({"user": daily("11:00", "11:30")}, last_success={"user": T0})
    s.start(0.0, T0)  # 12:00 in Berlin
    assert s.due(0.0, T0) == []
    late = utc(2026, 6, 2, 9, 0)  # 11:00 local the next day
    assert s.due(1.0, late) == ["user"]
    past_both = utc(2026, 6, 2, 9, 45)  # the run took 45 min: 11:30 passed during it
    s.finished("user", 2.0, past_both, ok=True)
    assert s.due(2.0, past_both) == ["user"]
    s.finished("user", 3.0, past_both, ok=True)
    assert s.due(3.0, past_both) == []


# --- wall-clock jumps ---


def test_a_wall_jump_forward_runs_a_skipped_daily_time_once_and_leaves_intervals_alone() -> None:
    """Jumping the wall clock past two daily times runs the entity once; the interval holds."""
    s = sched({"user": daily("13:00", "14:00"), "task": every(MINUTE)}, last_success={"user": T0})
    loop = Loop(s)  # 12:00 Berlin
    loop.run_until(30.0)
    loop.jump_wall(timedelta(hours=5))  # 17:00 Berlin: past 13:00 and 14:00
    loop.run_until(3 * MINUTE)
    assert len(loop.start_walls["user"]) == 1
    assert started_at(loop, "task") == [0.0, 60.0, 120.0, 180.0]


def test_a_wall_jump_back_never_runs_the_same_daily_instant_twice() -> None:
    """After running 11:00 and stepping the clock back an hour, 11:00 does not run again."""
    s = sched({"user": daily("11:00", "18:00"), "task": every(MINUTE)}, last_success={"user": T0})
    loop = Loop(s, wall0=utc(2026, 6, 1, 8, 30))  # 10:30 Berlin
    loop.run_until(HOUR)  # 11:00 local ran at mono 1800
    assert loop.start_walls["user"] == [utc(2026, 6, 1, 9, 0)]
    loop.jump_wall(-timedelta(hours=1))  # back to 10:30 local
    loop.run_until(9 * HOUR)  # the wall clock reaches 18:00 local again at mono 8.5 h
    assert loop.start_walls["user"] == [utc(2026, 6, 1, 9, 0), utc(2026, 6, 1, 16, 0)]
    assert started_at(loop, "task") == [k * MINUTE for k in range(9 * 60 + 1)]


def test_a_wall_jump_back_while_waiting_for_a_slot_does_not_run_twice() -> None:
    """A daily run that came due while slots were full runs once, even if the clock steps back."""
    s = sched({"busy": every(HOUR), "user": daily("11:00")}, max_concurrent=1)
    eleven = utc(2026, 6, 1, 9, 0)
    s.start(0.0, eleven)
    assert s.due(0.0, eleven) == ["busy"]  # user is due too (no last success) but waits
    back = eleven - timedelta(minutes=30)
    s.finished("busy", 10.0, back, ok=True)
    assert s.due(10.0, back) == ["user"]
    s.finished("user", 20.0, back, ok=True)
    assert s.due(1800.0, eleven + timedelta(seconds=5)) == []


# --- concurrency ---


def test_fifty_entities_with_four_slots_never_exceed_four_and_all_run() -> None:
    """50 entities, max_concurrent 4: at most 4 at once, every one runs, in declaration order."""
    names = [f"e{i:02d}" for i in range(50)]
    s = sched({name: every(10 * MINUTE) for name in names}, max_concurrent=4)
    loop = Loop(s, duration=lambda name: 5.0 + int(name[1:]) % 7 * 5)
    loop.run_until(HOUR)
    assert loop.peak == 4
    assert loop.names_started()[:50] == names
    runs = {name: len(started_at(loop, name)) for name in names}
    assert min(runs.values()) >= 6


def test_entities_waiting_for_a_slot_start_oldest_due_first() -> None:
    """The one due longest starts first, whatever the declaration order."""
    s = sched(
        {"busy": every(4 * HOUR), "late": daily("13:00"), "early": daily("12:30")},
        max_concurrent=1,
        last_success={"late": T0, "early": T0},
    )
    s.start(0.0, T0)  # 12:00 Berlin
    assert s.due(0.0, T0) == ["busy"]
    assert s.due(HOUR, T0 + timedelta(hours=1)) == []  # both came due while busy runs
    assert s.run_now("busy")
    s.finished("busy", 2 * HOUR, T0 + timedelta(hours=2), ok=True)
    then = T0 + timedelta(hours=2)
    assert s.due(2 * HOUR, then) == ["early"]
    s.finished("early", 2 * HOUR + 1, then, ok=True)
    assert s.due(2 * HOUR + 1, then) == ["late"]
    s.finished("late", 2 * HOUR + 2, then, ok=True)
    assert s.due(2 * HOUR + 2, then) == ["busy"]  # the manual request came due last


def test_a_job_waiting_for_a_slot_is_not_duplicated() -> None:
    """Asking again while waiting, by schedule or by hand, still starts it once."""
    s = sched({"busy": every(HOUR), "task": every(MINUTE)}, max_concurrent=1)
    s.start(0.0, T0)
    assert s.due(0.0, T0) == ["busy"]
    for mono in (60.0, 120.0, 180.0):
        assert s.due(mono, T0) == []
        assert s.run_now("task")
    assert s.sleep_for(180.0, T0) is None  # nothing can start until a slot frees
    assert s.snapshot()[1] == {
        "name": "task",
        "running": False,
        "waiting": True,
        "next_run": "2026-06-01T10:00:00+00:00",
    }
    s.finished("busy", 200.0, T0, ok=True)
    assert s.due(200.0, T0) == ["task"]
    s.finished("task", 201.0, T0, ok=True)
    assert s.due(201.0, T0) == []


def test_sleep_for_is_none_with_nothing_scheduled_and_zero_when_a_slot_and_a_job_wait() -> None:
    """sleep_for: None while everything runs; 0 when a waiting job meets a free slot."""
    s = sched({"a": every(MINUTE), "b": every(MINUTE)}, max_concurrent=1)
    s.start(0.0, T0)
    assert s.due(0.0, T0) == ["a"]
    assert s.sleep_for(0.0, T0) is None
    s.finished("a", 1.0, T0, ok=True)
    assert s.sleep_for(1.0, T0) == 0.0
    assert sched({}).sleep_for(0.0, T0) is None


# --- manual runs ---


def test_run_now_while_idle_runs_at_once_and_restarts_the_interval() -> None:
    """A manual run of an idle `every` entity starts now; the next one an interval later."""
    s = sched({"task": every(MINUTE)})
    s.start(0.0, T0)
    s.due(0.0, T0)
    s.finished("task", 1.0, T0, ok=True)
    assert s.run_now("task")
    assert s.sleep_for(30.0, T0) == 0.0
    assert s.due(30.0, T0) == ["task"]
    s.finished("task", 31.0, T0, ok=True)
    assert s.due(60.0, T0) == []
    assert s.due(90.0, T0) == ["task"]


def test_run_now_of_a_daily_entity_keeps_its_scheduled_time() -> None:
    """A manual run does not use up the daily entity's next scheduled time."""
    s = sched({"user": daily("13:00")}, last_success={"user": T0})
    s.start(0.0, T0)  # 12:00 Berlin
    assert s.run_now("user")
    assert s.due(1.0, T0) == ["user"]
    s.finished("user", 2.0, T0, ok=True)
    assert s.due(HOUR, T0 + timedelta(hours=1)) == ["user"]


def test_run_now_while_running_runs_once_more_right_after() -> None:
    """Manual requests during a run give exactly one more run when it ends."""
    s = sched({"task": every(HOUR)})
    s.start(0.0, T0)
    s.due(0.0, T0)
    assert s.run_now("task")
    assert s.run_now("task")
    assert s.due(1.0, T0) == []
    s.finished("task", 5.0, T0, ok=True)
    assert s.due(5.0, T0) == ["task"]
    s.finished("task", 6.0, T0, ok=True)
    assert s.due(6.0, T0) == []


def test_run_now_of_an_unknown_entity_is_refused() -> None:
    """run_now answers False for a name the table does not hold (HTTP 404)."""
    s = sched({"task": every(MINUTE)})
    s.start(0.0, T0)
    assert not s.run_now("nope")


# --- reload ---


def test_replace_adds_changes_and_removes_without_cutting_a_run_short() -> None:
    """A reload mid-run: added runs, running finishes, removed never restarts."""
    s = sched({"task": every(MINUTE), "user": every(MINUTE), "gone": every(MINUTE)})
    s.start(0.0, T0)
    assert s.due(0.0, T0) == ["task", "user", "gone"]
    s.finished("user", 1.0, T0, ok=True)
    s.replace({"task": every(5 * MINUTE), "user": every(MINUTE), "new": every(HOUR)}, 10.0, T0)
    assert [(j["name"], j["running"]) for j in s.snapshot()] == [
        ("task", True),
        ("user", False),
        ("new", False),
        ("gone", True),
    ]
    assert s.due(10.0, T0) == ["new"]
    assert not s.run_now("gone")
    s.finished("gone", 20.0, T0, ok=True)
    s.finished("task", 70.0, T0, ok=True)
    assert s.due(70.0, T0) == ["user"]  # unchanged: kept its plan (due at 60)
    assert [j["name"] for j in s.snapshot()] == ["task", "user", "new"]
    for mono in (120.0, 180.0, 240.0):
        assert "gone" not in s.due(mono, T0)
    assert "task" in s.due(300.0, T0)  # changed: new interval after its last start


def test_an_entity_removed_while_waiting_for_a_slot_never_starts() -> None:
    """A removed entity leaves the queue of runs waiting for a slot."""
    s = sched({"busy": every(HOUR), "gone": every(MINUTE)}, max_concurrent=1)
    s.start(0.0, T0)
    assert s.due(0.0, T0) == ["busy"]
    s.replace({"busy": every(HOUR)}, 1.0, T0)
    s.finished("busy", 2.0, T0, ok=True)
    assert s.due(2.0, T0) == []


def test_an_entity_removed_and_re_added_while_running_does_not_overlap() -> None:
    """Re-adding a still-running entity waits for its run, then runs as if new."""
    s = sched({"task": every(HOUR)})
    s.start(0.0, T0)
    s.due(0.0, T0)
    s.replace({}, 1.0, T0)
    s.replace({"task": every(HOUR)}, 2.0, T0)
    assert s.due(2.0, T0) == []
    s.finished("task", 3.0, T0, ok=True)
    assert s.due(3.0, T0) == ["task"]


def test_a_changed_daily_entity_runs_at_its_next_new_time_without_catch_up() -> None:
    """Changing `at` times on reload plans the next new time; no run at once."""
    s = sched({"user": daily("11:00")}, last_success={"user": T0})
    s.start(0.0, T0)  # 12:00 Berlin
    s.replace({"user": daily("08:00", "15:00")}, 1.0, T0)
    assert s.due(1.0, T0) == []
    assert s.sleep_for(1.0, T0) == pytest.approx(3 * HOUR)


def test_replace_can_change_max_concurrent_without_cutting_runs_short() -> None:
    """Lowering the limit on reload blocks new starts until the running ones end."""
    s = sched({"a": every(MINUTE), "b": every(MINUTE), "c": every(MINUTE)}, max_concurrent=2)
    s.start(0.0, T0)
    assert s.due(0.0, T0) == ["a", "b"]
    s.replace(
        {"a": every(MINUTE), "b": every(MINUTE), "c": every(MINUTE)}, 1.0, T0, max_concurrent=1
    )
    s.finished("a", 2.0, T0, ok=True)
    assert s.due(2.0, T0) == []
    s.finished("b", 3.0, T0, ok=True)
    assert s.due(3.0, T0) == ["c"]


def test_an_added_daily_entity_uses_the_given_last_success_for_catch_up() -> None:
    """An `at` entity added by a reload catches up only if its last success is stale."""
    s = sched({})
    s.start(0.0, T0)
    s.replace(
        {"fresh": daily("11:00"), "stale": daily("11:00")},
        1.0,
        T0,
        last_success={"fresh": T0, "stale": T0 - timedelta(days=2)},
    )
    assert s.due(1.0, T0) == ["stale"]


def test_snapshot_reports_next_runs_in_the_schedule_zone() -> None:
    """snapshot(): name, running, waiting and next_run as ISO 8601 in the entity's zone."""
    s = sched(
        {"task": every(MINUTE), "user": daily("19:14", zone=ZoneInfo("Asia/Kolkata"))},
        last_success={"user": T0},
    )
    s.start(0.0, T0)
    s.due(0.0, T0)
    assert s.snapshot() == [
        {
            "name": "task",
            "running": True,
            "waiting": False,
            "next_run": "2026-06-01T10:01:00+00:00",
        },
        {
            "name": "user",
            "running": False,
            "waiting": False,
            "next_run": "2026-06-01T19:14:00+05:30",
        },
    ]


# --- several instances and load ----------------------------------------------------------


def test_a_turn_served_elsewhere_moves_the_next_try_to_the_other_cadence() -> None:
    table = Scheduler({"a": every(60)}, max_concurrent=4)
    table.start(0.0, T0)
    assert table.due(0.0, T0) == ["a"]
    assert table.started_for("a") == Due(interval=60.0, first=True)
    table.skipped("a", 0.5, T0, next_in=25.0)  # another instance started it 35 s ago
    # Its next try: when that interval ends, plus the claim's slack (a second here),
    # so the instance that ran it keeps it while it keeps up.
    assert table.sleep_for(0.5, T0) == 26.0
    assert table.due(26.0, T0) == []
    assert table.due(26.5, T0) == ["a"]


def test_a_loop_that_wakes_late_keeps_the_cadence_only_a_wait_for_a_slot_moves_it() -> None:
    table = Scheduler({"a": every(60)}, max_concurrent=1)
    table.start(0.0, T0)
    assert table.due(0.0, T0) == ["a"]
    table.finished("a", 1.0, T0, ok=True)
    assert table.due(61.5, T0) == ["a"]  # woke 1.5 s late, a slot free: no drift
    table.finished("a", 62.0, T0, ok=True)
    assert table.sleep_for(62.0, T0) == 58.0


def test_entities_due_together_spread_out_over_the_time_their_runs_took() -> None:
    """At start every entity is due at once; with one slot, each run that waited for
    it counts its interval from its actual start, so the next round is spread out
    as the first one was, not due all at once again."""
    names = ["a", "b", "c"]
    table = Scheduler({name: every(60) for name in names}, max_concurrent=1)
    table.start(0.0, T0)
    started: dict[str, float] = {}
    mono = 0.0
    while len(started) < len(names):
        [name] = table.due(mono, T0)
        started[name] = mono
        mono += 10.0  # each run takes 10 s
        table.finished(name, mono, T0, ok=True)
    assert started == {"a": 0.0, "b": 10.0, "c": 20.0}
    assert table.sleep_for(30.0, T0) == 30.0  # a, one interval after its start
    assert table.due(60.0, T0) == ["a"]
    table.finished("a", 61.0, T0, ok=True)
    assert table.due(61.0, T0) == []
    assert table.sleep_for(61.0, T0) == 9.0  # b, one interval after its late start


def test_a_daily_turn_names_its_slot_and_a_manual_run_says_so() -> None:
    noon = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # 12:00 in Berlin
    table = Scheduler({"d": daily("12:00")}, max_concurrent=4, last_success={"d": None})
    table.start(0.0, noon + timedelta(seconds=5))
    assert table.due(0.0, noon + timedelta(seconds=5)) == ["d"]
    assert table.started_for("d") == Due(slot=noon)
    table.finished("d", 1.0, noon + timedelta(seconds=6), ok=True)
    assert table.run_now("d")
    assert table.due(2.0, noon + timedelta(seconds=7)) == ["d"]
    assert table.started_for("d").manual


def test_lag_is_how_long_the_oldest_due_entity_has_waited_for_a_slot() -> None:
    table = Scheduler({"a": every(60), "b": every(60), "c": every(60)}, max_concurrent=1)
    table.start(0.0, T0)
    assert table.due(0.0, T0) == ["a"]
    assert table.lag(0.0) == 0.0
    assert table.lag(7.0) == 7.0  # b and c wait since 0
    table.finished("a", 7.0, T0, ok=True)
    assert table.due(7.0, T0) == ["b"]
    assert table.lag(9.0) == 9.0  # c still waits since 0
    table.finished("b", 9.0, T0, ok=True)
    assert table.due(9.0, T0) == ["c"]
    assert table.lag(9.0) == 0.0
