"""The job table of `syncd run`: which entities to start now, and how long the loop may sleep.

Pure and clock-driven: no threads, no sleeping, no clock of its own. The loop owns
the worker pool and passes in the monotonic time (`mono`, seconds) and the wall
time (`wall`, an aware datetime) at every call:

    scheduler.start(mono, wall)
    loop:
        for name in scheduler.due(mono, wall): submit the run of `name`
        wait at most scheduler.sleep_for(mono, wall) (None: nothing planned; the loop
        caps the wait), or until a run ends, a manual request or a reload arrives
    a run starts:     scheduler.started_for(name) says why (the turn it claims)
    a run ends:       scheduler.finished(name, mono, wall, ok), then due() again
    skipped:          scheduler.skipped(name, mono, wall, next_in), then due() again
    POST /v1/sync/x:  scheduler.run_now("x"), then due() again
    SIGHUP:           scheduler.replace(schedules, mono, wall), then due() again

When an entity runs:

- `every`: at start, then one interval after the previous run's start, on the
  monotonic clock (no drift: a run's length does not push the next one, and a
  loop that wakes a little late does not either). An overrun (a run longer than
  the interval) is followed by ONE run at once when it ends, not a burst of the
  missed ones; the interval then counts from that run's start. So does the
  interval of a run that had to wait for a free slot: entities that came due
  together (all of them, at start) spread out over the time their runs took,
  instead of queueing together again every interval.
- `at`: at each scheduled time of day (DST: see `syncd.service.triggers`). Once at start
  if its last successful run is older than its most recent scheduled time, or
  there is none (a daily run missed while syncd was down is caught up, once).
  Several scheduled times passed at once (a long run, a clock jump) run once.
- Wall-clock jumps: intervals never notice. Daily times are re-evaluated against
  the wall clock at every call: a jump forward past a scheduled time runs it once;
  a jump back never runs a scheduled instant that already ran (each entity
  remembers the last scheduled instant it ran for).
- An entity never overlaps itself: a run that comes due while it is running waits
  for it to end. At most `max_concurrent` runs at once; entities due beyond that
  wait for a slot in the order they came due (oldest first), each once.
- A failed run is planned exactly like a successful one; failures never stop the
  schedule. A run skipped because another instance holds the entity's lock
  (`skipped`) is planned like a finished one: the next try is the next due time.
- Several instances share one schedule in the database (db/schedule_state.py):
  each start claims its turn there (`started_for` says which: the interval, the
  `at` instant, or manual). A run skipped because another instance already served
  the interval comes with `next_in`, the seconds until that instance's interval
  ends: the next try is then plus the claim's slack (a tenth of the interval, at
  most a second). So the instance that ran an entity last runs it again while it
  keeps up, the others find the turn served a moment later, and when it falls
  behind or dies another runs it, at most that moment late.
- Manual runs (`run_now`): run as soon as a slot is free; if the entity is running,
  once more right after it ends; a request while one is already pending or
  waiting adds nothing. A manual run of an `every` entity restarts its interval;
  it does not use up a daily entity's next scheduled time (one already due is
  covered by it).
- Reload (`replace`): a running entity is never cut short. A removed entity never
  starts again. An added one is planned as at start. A changed `every` entity
  runs one new interval after its last start (at once if that has passed or it
  never ran); a changed `at` entity runs at its next new time (no catch-up: the
  old schedule kept it in sync). An unchanged one keeps its plan. An entity
  already waiting for a slot keeps its place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta

from syncd.config.model import Config, Schedule
from syncd.db.schedule_state import Due, slack
from syncd.service.triggers import DailyTrigger, IntervalTrigger, trigger_for


class _Job(ABC):
    """One entity's plan and state. Subclasses say when a scheduled run is due."""

    def __init__(self, name: str, schedule: Schedule) -> None:
        self.name = name
        self.schedule = schedule
        self.running = False
        self.again = False  # a manual run is pending
        self.removed = False  # dropped by a reload; forgotten when its run ends
        self.last_start: float | None = None  # monotonic
        self.queued = False  # came due while every slot was taken: waits for one
        self.started_wall: datetime | None = None  # of the current or last run
        self.started_for = Due(manual=True)  # the turn of the current or last run

    def due_since(self, mono: float, wall: datetime) -> float | None:
        """Since when (monotonic) a run has been wanted, or None if none is."""
        since = self.scheduled_since(mono, wall)
        if self.again:
            since = mono if since is None else min(since, mono)
        return since

    def begin(self, mono: float, wall: datetime) -> None:
        self.claim(mono, wall)
        self.started_for = self.turn(manual=self.again)
        self.running, self.again, self.queued = True, False, False
        self.last_start, self.started_wall = mono, wall

    @abstractmethod
    def turn(self, manual: bool) -> Due:
        """The turn the run just begun claims in the shared schedule."""

    def realign(self, mono: float, next_in: float) -> None:  # noqa: B027 (daily: nothing)
        """Another instance served this turn; its next one is `next_in` seconds away.
        A daily entity's next turn is its next time of day: nothing to move."""

    def seconds_until(self, mono: float, wall: datetime) -> float:
        return 0.0 if self.again else max(0.0, self.seconds_until_scheduled(mono, wall))

    def next_run(self, mono: float, wall: datetime) -> datetime:
        return wall + timedelta(seconds=self.seconds_until(mono, wall))

    def take_over(self, old: _Job) -> None:
        """Carry the running state of the job this one replaces."""
        self.running, self.again, self.queued = old.running, old.again, old.queued
        self.last_start, self.started_wall = old.last_start, old.started_wall

    @abstractmethod
    def plan_start(self, mono: float, wall: datetime, last_success: datetime | None) -> None:
        """Plan the first run, as at daemon start."""

    @abstractmethod
    def plan_change(self, old: _Job, mono: float, wall: datetime) -> None:
        """Plan the next run after a reload changed this entity's schedule."""

    @abstractmethod
    def scheduled_since(self, mono: float, wall: datetime) -> float | None:
        """Since when (monotonic) a scheduled run has been due, or None."""

    @abstractmethod
    def came_due(self, mono: float, wall: datetime) -> None:
        """It joined the queue of runs waiting for a slot."""

    @abstractmethod
    def claim(self, mono: float, wall: datetime) -> None:
        """A run is taken: use up the scheduled runs it stands for."""

    @abstractmethod
    def seconds_until_scheduled(self, mono: float, wall: datetime) -> float:
        """Seconds until the next scheduled run (<= 0: due now)."""


class _IntervalJob(_Job):
    def __init__(self, name: str, schedule: Schedule, trigger: IntervalTrigger) -> None:
        super().__init__(name, schedule)
        self.trigger = trigger
        self.next_mono = 0.0
        self.first = False  # the next run is the first since this instance started

    def plan_start(self, mono: float, wall: datetime, last_success: datetime | None) -> None:
        self.next_mono = mono
        self.first = True

    def plan_change(self, old: _Job, mono: float, wall: datetime) -> None:
        last = old.last_start
        self.next_mono = mono if last is None else last + self.trigger.seconds

    def scheduled_since(self, mono: float, wall: datetime) -> float | None:
        return self.next_mono if self.next_mono <= mono else None

    def came_due(self, mono: float, wall: datetime) -> None:
        pass  # the interval counts from the actual start, in claim()

    def claim(self, mono: float, wall: datetime) -> None:
        # Called at the start: a manual run ahead of the plan restarts the interval,
        # and so does a run that waited for a slot (see the module docstring).
        planned = self.next_mono if self.next_mono <= mono and not self.queued else mono
        self.next_mono = self.trigger.next_after(planned, mono)

    def turn(self, manual: bool) -> Due:
        first, self.first = self.first, False
        return Due(manual=manual, interval=self.trigger.seconds, first=first)

    def realign(self, mono: float, next_in: float) -> None:
        # Try a little after the instance that served it: while that one keeps up it
        # keeps the entity (one try, one claim); when it falls behind or dies, this
        # one runs it, a moment late.
        self.next_mono = mono + max(0.0, next_in) + slack(self.trigger.seconds)

    def seconds_until_scheduled(self, mono: float, wall: datetime) -> float:
        return self.next_mono - mono


class _DailyJob(_Job):
    def __init__(self, name: str, schedule: Schedule, trigger: DailyTrigger) -> None:
        super().__init__(name, schedule)
        self.trigger = trigger
        self.ran_for: datetime | None = None  # the last scheduled instant run for

    def plan_start(self, mono: float, wall: datetime, last_success: datetime | None) -> None:
        latest = self.trigger.previous_at_or_before(wall)
        caught_up = last_success is not None and latest is not None and last_success >= latest
        self.ran_for = latest if caught_up else None

    def plan_change(self, old: _Job, mono: float, wall: datetime) -> None:
        self.ran_for = self.trigger.previous_at_or_before(wall)

    def _missed(self, wall: datetime) -> datetime | None:
        """The latest scheduled instant not run for yet, if it has passed."""
        latest = self.trigger.previous_at_or_before(wall)
        if latest is None or (self.ran_for is not None and latest <= self.ran_for):
            return None
        return latest

    def scheduled_since(self, mono: float, wall: datetime) -> float | None:
        missed = self._missed(wall)
        return None if missed is None else mono - (wall - missed).total_seconds()

    def came_due(self, mono: float, wall: datetime) -> None:
        # Claimed when it comes due (and again at the start): a clock stepping back
        # while it waits for a slot cannot make the same instant due twice.
        self.claim(mono, wall)

    def claim(self, mono: float, wall: datetime) -> None:
        self.ran_for = self._missed(wall) or self.ran_for

    def turn(self, manual: bool) -> Due:
        return Due(manual=manual, slot=self.ran_for)

    def seconds_until_scheduled(self, mono: float, wall: datetime) -> float:
        if self._missed(wall) is not None:
            return 0.0
        after = wall if self.ran_for is None else max(wall, self.ran_for)
        return (self.trigger.next_after(after) - wall).total_seconds()


def schedules(config: Config) -> dict[str, Schedule]:
    """Each entity's schedule, as the scheduler takes them."""
    return {name: entity.schedule for name, entity in config.entities.items()}


def _new_job(name: str, schedule: Schedule) -> _Job:
    trigger = trigger_for(schedule)
    if isinstance(trigger, IntervalTrigger):
        return _IntervalJob(name, schedule, trigger)
    return _DailyJob(name, schedule, trigger)


def _checked_limit(max_concurrent: int) -> int:
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
    return max_concurrent


class Scheduler:
    """The job table: see the module docstring for when entities run."""

    def __init__(
        self,
        schedules: Mapping[str, Schedule],
        max_concurrent: int,
        last_success: Mapping[str, datetime | None] | None = None,
    ) -> None:
        self._max = _checked_limit(max_concurrent)
        self._schedules = dict(schedules)
        self._last_ok: dict[str, datetime | None] = dict(last_success or {})
        self._jobs: dict[str, _Job] = {}  # in declaration order, then removed running ones
        self._waiting: deque[str] = deque()  # due, waiting for a slot, oldest first
        self._due_since: dict[str, float] = {}  # monotonic: since when each waiting one was due
        self._seen: tuple[float, datetime] | None = None  # the latest times passed in

    def start(self, mono: float, wall: datetime) -> None:
        """Plan the first runs: `every` entities at once, `at` ones as described."""
        self._seen = (mono, wall)
        self._jobs = {}
        for name, schedule in self._schedules.items():
            job = _new_job(name, schedule)
            job.plan_start(mono, wall, self._last_ok.get(name))
            self._jobs[name] = job

    def due(self, mono: float, wall: datetime) -> list[str]:
        """The entities to start now, oldest due first; they are marked running."""
        self._seen = (mono, wall)
        queued = set(self._waiting)
        fresh: list[tuple[float, int, str]] = []
        for order, job in enumerate(self._jobs.values()):
            if job.running or job.removed or job.name in queued:
                continue
            since = job.due_since(mono, wall)
            if since is not None:
                job.came_due(mono, wall)
                fresh.append((since, order, job.name))
                self._due_since[job.name] = since
        self._waiting.extend(name for _, _, name in sorted(fresh))
        started: list[str] = []
        while self._waiting and self._running() < self._max:
            job = self._jobs[self._waiting.popleft()]
            self._due_since.pop(job.name, None)
            job.begin(mono, wall)
            started.append(job.name)
        for name in self._waiting:
            self._jobs[name].queued = True
        return started

    def finished(self, name: str, mono: float, wall: datetime, ok: bool) -> None:
        """A run ended, well or not: the entity is planned the same either way."""
        self._seen = (mono, wall)
        job = self._jobs.get(name)
        if job is None or not job.running:
            return  # not ours to track (a run the table never started)
        job.running = False
        if ok:
            self._last_ok[name] = job.started_wall
        if job.removed:
            del self._jobs[name]

    def skipped(self, name: str, mono: float, wall: datetime, next_in: float | None = None) -> None:
        """The run was skipped: another instance holds the lock (try at the next due
        time), or already served this turn (`next_in`: its interval's next run)."""
        self.finished(name, mono, wall, ok=False)
        job = self._jobs.get(name)
        if job is not None and next_in is not None:
            job.realign(mono, next_in)

    def started_for(self, name: str) -> Due:
        """The turn `name`'s current run claims (its last run's, when none is running)."""
        job = self._jobs.get(name)
        return job.started_for if job is not None else Due(manual=True)

    def run_now(self, name: str) -> bool:
        """Ask for a manual run; False if the entity is unknown (or removed)."""
        job = self._jobs.get(name)
        if job is None or job.removed:
            return False
        job.again = True
        return True

    def lag(self, mono: float) -> float:
        """Seconds the longest-waiting due entity has waited for a free slot (0: none
        waits). Growing, it says this instance cannot keep up: `max_concurrent` is
        too low, or the entities need another instance."""
        return max((mono - self._due_since[name] for name in self._waiting), default=0.0)

    def sleep_for(self, mono: float, wall: datetime) -> float | None:
        """Seconds until something may be due (0: call `due` now); None: nothing planned.

        Entities that are due but find every slot taken do not count: a slot only
        frees in `finished`, after which the loop calls `due` anyway."""
        free = self._running() < self._max
        if free and self._waiting:
            return 0.0
        waits: list[float] = []
        for job in self._jobs.values():
            if job.running or job.removed or job.name in self._waiting:
                continue
            wait = job.seconds_until(mono, wall)
            if wait > 0 or free:
                waits.append(wait)
        return min(waits, default=None)

    def replace(
        self,
        schedules: Mapping[str, Schedule],
        mono: float,
        wall: datetime,
        last_success: Mapping[str, datetime | None] | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        """Apply reloaded schedules (SIGHUP) without cutting any running run short.

        `last_success` may give the last successful run of added entities, for
        their catch-up; otherwise what this table saw is used. A new
        `max_concurrent` applies to starts from now on; runs above it finish."""
        if max_concurrent is not None:
            self._max = _checked_limit(max_concurrent)
        self._seen = (mono, wall)
        self._schedules = dict(schedules)
        self._last_ok.update(last_success or {})
        jobs: dict[str, _Job] = {}
        for name, schedule in schedules.items():
            old = self._jobs.get(name)
            if old is not None and not old.removed and old.schedule == schedule:
                jobs[name] = old
                continue
            job = _new_job(name, schedule)
            if old is None or old.removed:
                job.plan_start(mono, wall, self._last_ok.get(name))
            else:
                job.plan_change(old, mono, wall)
            if old is not None:
                job.take_over(old)
            jobs[name] = job
        for name, old in self._jobs.items():
            if name not in schedules and old.running:
                old.removed, old.again = True, False
                jobs[name] = old
        self._waiting = deque(name for name in self._waiting if name in schedules)
        self._due_since = {name: self._due_since[name] for name in self._waiting}
        self._jobs = jobs

    def snapshot(self) -> list[dict[str, object]]:
        """Per entity, as of the latest call: `name`; `running`; `waiting` (due, waiting
        for a free slot); `next_run`, ISO 8601 in the schedule's time zone, or None for
        a removed entity whose last run is still going."""
        if self._seen is None:
            return []
        mono, wall = self._seen
        return [self._status(job, mono, wall) for job in self._jobs.values()]

    def _status(self, job: _Job, mono: float, wall: datetime) -> dict[str, object]:
        waiting = job.name in self._waiting
        when = None if job.removed else wall if waiting else job.next_run(mono, wall)
        return {
            "name": job.name,
            "running": job.running,
            "waiting": waiting,
            "next_run": None
            if when is None
            else when.astimezone(job.schedule.timezone).isoformat(),
        }

    def _running(self) -> int:
        return sum(job.running for job in self._jobs.values())
