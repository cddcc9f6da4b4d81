"""A stand-in upstream source for the demo, the tests and the benchmarks.

It speaks the protocol syncd expects of a source (docs/architecture.md#source-protocol).

It serves four entities (`task`, `inspection`, `user`, `entity`) over plain HTTP with the
standard library only:

    GET /api/TaskDetails/GetTaskDetailsListForSync?fromTime=..&toTime=..&limit=..&offset=..
    GET /api/task?...                                  (short alias, same answer)

`fromTime` and `toTime` are required (`%Y-%m-%d %H:%M:%S` or ISO 8601, read in `timezone`
when they carry no offset); `limit` defaults to, and is capped at, `max_limit`; `offset` to 0.
A window holds the records whose modification instant is in `[fromTime, toTime)`
(`inclusive_to=True` makes it `[fromTime, toTime]`), ordered by (instant, key). Each record's
JSON is serialized once when it is stored, and every entity keeps its records in one sorted
list, so answering a page is a bisect, a slice and a `b",".join` -- fast enough to serve
200,000 records a page of 1000 at a time.

Records are generated deterministically from `seed`. Tests change the data directly
(`insert`, `update`, `delete`, `bad_records`), inject faults (`fail_next`, `truncate_next`,
`delay_next`), watch requests (`requests`, `request_count`) and can act between two page
requests through `on_request`, which runs at the *start* of handling every request for an
entity -- before the API key, the fault knobs and the page are looked at -- so whatever it
changes is already visible in the answer to that very request.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gzip
import hmac
import json
import logging
import os
import queue
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, NamedTuple, TypeVar, cast
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

__all__ = [
    "BAD_KINDS",
    "DEFAULT_COUNTS",
    "DemoSource",
    "RequestRecord",
    "main",
    "parse_timestamp",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Record = dict[str, Any]
Key = int | str
Clock = Callable[[], datetime]
RequestHook = Callable[[str, dict[str, str]], None]
# Where a record lives in its store: its key, or ("bad", n) for a record that has no usable key.
Handle = int | str | tuple[str, int]
# (modification instant in µs since the epoch, key rank, key): the sort order of a window.
# The rank keeps keys of different types apart so they never get compared with each other.
OrderKey = tuple[int, int, int | str]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
DEFAULT_COUNTS: Mapping[str, int] = {"task": 500, "inspection": 300, "user": 50, "entity": 20}
# What `bad_records` can break, cycled in this order unless told otherwise.
BAD_KINDS = ("missing_key", "null_key", "bad_key", "bad_field", "bad_timestamp")
API_KEY_HEADER = "X-API-KEY"
_KEYLESS_RANK = 2


# --- timestamps ---------------------------------------------------------------------------


def _zone(name: str) -> tzinfo:
    return UTC if name.upper() == "UTC" else ZoneInfo(name)


def _aware(moment: datetime, zone: tzinfo) -> datetime:
    """A naive datetime is read in the source time zone
    (docs/architecture.md#source-protocol)."""
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment


def _to_us(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_US


def _from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def parse_timestamp(text: str, zone: tzinfo = UTC) -> datetime:
    """Parse `YYYY-MM-DD HH:MM:SS` or ISO 8601 (T or space, fraction, Z or ±HH:MM) to aware UTC.

    Without an offset the text is read in `zone`. Raises ValueError when it is not a time.
    """
    return _aware(datetime.fromisoformat(text.strip()), zone).astimezone(UTC)


# Each entity writes its timestamps its own way, as real upstreams do; all of them carry the
# full microsecond instant, so what a record says is exactly where it sorts.
def _stamp_local_naive(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).replace(tzinfo=None).isoformat(" ", "microseconds")


def _stamp_utc_offset(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(UTC).isoformat("T", "microseconds")


def _stamp_utc_z(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat("T", "microseconds") + "Z"


def _stamp_local_offset(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).isoformat("T", "microseconds")


# --- entities -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _EntitySpec:
    name: str
    path: str
    key_field: str
    first_id: int  # the first integer key handed out; 0 means the key is a UUID string
    stamp: Callable[[datetime, tzinfo], str]
    bad_field: tuple[str, Any]  # a field and a value of the wrong type for it

    @property
    def alias(self) -> str:
        return f"/api/{self.name}"


_SPECS: dict[str, _EntitySpec] = {
    spec.name: spec
    for spec in (
        _EntitySpec(
            "task",
            "/api/TaskDetails/GetTaskDetailsListForSync",
            "TaskId",
            100_001,
            _stamp_local_naive,
            ("Priority", "high"),
        ),
        _EntitySpec(
            "inspection",
            "/api/InspectionDetails/GetInspectionDetailsListForSync",
            "InspectionId",
            500_001,
            _stamp_utc_offset,
            ("Score", "excellent"),
        ),
        _EntitySpec(
            "user",
            "/api/UserDetails/GetUserDetailsListForSync",
            "UserId",
            1_001,
            _stamp_utc_z,
            ("IsActive", "sometimes"),
        ),
        _EntitySpec(
            "entity",
            "/api/EntityDetails/GetEntityDetailsListForSync",
            "EntityId",
            0,
            _stamp_local_offset,
            ("ParentId", "not-a-uuid"),
        ),
    )
}


# --- realistic records --------------------------------------------------------------------

_TASK_STATUSES = ("Open", "InProgress", "Blocked", "Done")
_VERBS = ("Replace", "Inspect", "Repair", "Calibrate", "Clean", "Service", "Audit", "Install")
_THINGS = (
    "fire extinguisher",
    "HVAC filter",
    "emergency lighting",
    "loading dock door",
    "backflow preventer",
    "roof drain",
    "boiler valve",
    "forklift battery",
    "eyewash station",
    "electrical panel",
    "sprinkler head",
    "guard rail",
)
_PLACES = ("Building 4", "the north wing", "Warehouse B", "Level 2", "the car park", "Dock 7")
_SENTENCES = (
    "Reported by the night shift after the routine walk-through.",
    "Access requires a permit from facilities; book the lift in advance.",
    "Previous fix held for three weeks before the fault came back.",
    "Vendor warranty may cover parts, check the contract before ordering.",
    "Isolate the circuit and tag out before starting any work.",
    "Photos of the damage are attached to the original ticket.",
    "Tenant asked that work happens outside business hours.",
    "Spare parts are in the store room, shelf C, labelled by zone.",
    "Follow up with the safety officer once the job is signed off.",
    "Readings were outside tolerance on two consecutive checks.",
    "Noise complaint logged twice this month from the floor above.",
    "Replace consumables and record the batch number in the log.",
    "Site contact is on leave until Friday; use the deputy number.",
    "Temporary barrier in place, do not remove until inspected.",
    "Check the adjacent units too, they share the same supply line.",
    "Café staff report a smell of burning near the extractor fan.",
)
_TAGS = (
    "safety",
    "hvac",
    "electrical",
    "plumbing",
    "urgent",
    "quarterly",
    "compliance",
    "warranty",
    "external",
    "night-shift",
    "follow-up",
    "ppe",
)
_SITES = (
    {"Name": "North Yard", "Code": "NY-01"},
    {"Name": "Harbour Depot", "Code": "HD-02"},
    {"Name": "Zürich Annex", "Code": "ZA-03"},
    {"Name": "Central Plant", "Code": "CP-04"},
    {"Name": "Riverside Offices", "Code": "RO-05"},
    {"Name": "São Paulo Hub", "Code": "SP-06"},
)
_FIRST_NAMES = (
    ("Ana", "ana"),
    ("Bjørn", "bjorn"),
    ("Chen", "chen"),
    ("Émile", "emile"),
    ("Farah", "farah"),
    ("José", "jose"),
    ("Kiri", "kiri"),
    ("Priya", "priya"),
    ("Sven", "sven"),
    ("Zoë", "zoe"),
)
_LAST_NAMES = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Kowalski", "Haddad", "Patel", "Reyes")
_ROLES = ("Technician", "Inspector", "Supervisor", "Manager", "Admin", "Viewer")
_ENTITY_KINDS = ("Site", "Building", "Floor", "Room", "Asset", "Vehicle")
_CITIES = (("Pune", "IN"), ("Leeds", "GB"), ("Austin", "US"), ("Lyon", "FR"), ("Kraków", "PL"))
_STREETS = ("Station Road", "Mill Lane", "Harbour Street", "Kingsway", "Elm Avenue")
_RESULTS = ("Pass", "Pass", "Pass", "Fail", "NA")
_CHECK_ITEMS = (
    "Signage visible",
    "Pressure in range",
    "Seal intact",
    "Access clear",
    "Label current",
    "No corrosion",
    "Guard fitted",
    "Log book signed",
)
_NOTES = (
    "All items checked, no issues.",
    "Minor wear noted, recheck next quarter.",
    "Could not access the rear panel.",
    "Replaced the tag on site.",
)


class _Faker:
    """Builds realistic records from one random.Random, so a seed always gives the same data.

    Generating 200,000 records must take seconds, so the hot paths draw with `rng.random()`
    (one C call) through `pick`/`between` rather than `choice`/`randint`/`sample`, and the
    costly pieces (descriptions, tag lists) come from pools built once.
    """

    def __init__(self, rng: random.Random, zone: tzinfo) -> None:
        self.rng = rng
        self.zone = zone
        self._random = rng.random
        # Keys handed out so far, per entity: what references (AssigneeId, ...) point at.
        self.refs: dict[str, list[Key]] = {name: [] for name in _SPECS}
        self._next_id = {name: spec.first_id for name, spec in _SPECS.items()}
        self._descriptions = [self._description() for _ in range(512)]
        self._tag_lists = [rng.sample(_TAGS, rng.randint(0, 3)) for _ in range(256)]
        self._makers: dict[str, Callable[[Key, datetime, datetime], Record]] = {
            "task": self.task,
            "inspection": self.inspection,
            "user": self.user,
            "entity": self.entity,
        }

    def pick(self, items: Sequence[_T]) -> _T:
        return items[int(self._random() * len(items))]

    def between(self, low: int, high: int) -> int:
        """An int in [low, high], both included, like randint."""
        return low + int(self._random() * (high - low + 1))

    def new_key(self, entity: str) -> Key:
        key: Key
        if _SPECS[entity].first_id:
            key = self._next_id[entity]
            self._next_id[entity] += 1
        else:
            key = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.refs[entity].append(key)
        return key

    def make(self, entity: str, key: Key, created: datetime, modified: datetime) -> Record:
        return self._makers[entity](key, created, modified)

    def _description(self) -> str:
        """Three sentences cut at a word boundary: 140-230 characters, for ~600-byte tasks."""
        text = " ".join(self.rng.sample(_SENTENCES, 3))
        cut = text[: self.rng.randint(150, 230)].rsplit(" ", 1)[0].rstrip(" ,;.")
        return cut + "."

    def _ref(self, entity: str, null_ratio: float) -> Key | None:
        keys = self.refs[entity]
        if not keys or self._random() < null_ratio:
            return None
        return self.pick(keys)

    def _stamp(self, entity: str, moment: datetime) -> str:
        return _SPECS[entity].stamp(moment, self.zone)

    def task(self, key: Key, created: datetime, modified: datetime) -> Record:
        rnd, pick = self._random, self.pick
        location = None
        if rnd() >= 0.15:
            location = {
                "Lat": round(rnd() * 130.0 - 60.0, 6),
                "Lon": round(rnd() * 360.0 - 180.0, 6),
                "Site": pick(_SITES),
            }
        return {
            "TaskId": key,
            "Title": f"{pick(_VERBS)} {pick(_THINGS)} in {pick(_PLACES)}",
            "Description": pick(self._descriptions),
            "Status": pick(_TASK_STATUSES),
            "Priority": self.between(1, 5),
            "AssigneeId": self._ref("user", 0.1),
            "EntityId": self._ref("entity", 0.0),
            "InspectionId": self._ref("inspection", 0.6),
            "DueDate": (created + timedelta(days=self.between(1, 45))).date().isoformat(),
            "EstimateHours": self.between(1, 160) / 4,
            "IsBillable": rnd() < 0.4,
            "Tags": pick(self._tag_lists),
            "Location": location,
            "CreatedOn": self._stamp("task", created),
            "ModifiedOn": self._stamp("task", modified),
        }

    def inspection(self, key: Key, created: datetime, modified: datetime) -> Record:
        rnd, pick = self._random, self.pick
        result = pick(_RESULTS)
        checklist = [
            {"Item": item, "Passed": rnd() < 0.85, "Comment": None}
            for item in self.rng.sample(_CHECK_ITEMS, self.between(2, 5))
        ]
        return {
            "InspectionId": key,
            "TaskId": self._ref("task", 0.0),
            "InspectorId": self._ref("user", 0.0),
            "Result": result,
            "Score": None if result == "NA" else round(40.0 + rnd() * 60.0, 1),
            "Notes": pick(_NOTES) if rnd() < 0.7 else None,
            "Checklist": checklist,
            "InspectedOn": self._stamp("inspection", created),
            "ModifiedOn": self._stamp("inspection", modified),
            "IsFinal": rnd() < 0.6,
        }

    def user(self, key: Key, created: datetime, modified: datetime) -> Record:
        rnd, pick = self._random, self.pick
        first, slug = pick(_FIRST_NAMES)
        last = pick(_LAST_NAMES)
        manager = self._ref("user", 0.3)
        last_login = created + (modified - created) * rnd()
        return {
            "UserId": key,
            "Email": f"{slug}.{last.lower()}{key}@example.com",
            "DisplayName": f"{first} {last}",
            "Role": pick(_ROLES),
            "IsActive": rnd() < 0.9,
            "Manager": None if manager is None else {"UserId": manager},
            "LastLoginOn": None if rnd() < 0.2 else self._stamp("user", last_login),
            "CreatedOn": self._stamp("user", created),
            "ModifiedOn": self._stamp("user", modified),
        }

    def entity(self, key: Key, created: datetime, modified: datetime) -> Record:
        rnd, pick = self._random, self.pick
        city, country = pick(_CITIES)
        kind = pick(_ENTITY_KINDS)
        return {
            "EntityId": key,
            "Name": f"{city} {kind} {self.between(1, 99)}",
            "Kind": kind,
            "ParentId": self._ref("entity", 0.4),
            "Address": {
                "Line1": f"{self.between(1, 400)} {pick(_STREETS)}",
                "City": city,
                "PostCode": f"{self.between(10000, 99999)}",
                "Country": country,
            },
            "IsArchived": rnd() < 0.05,
            "CreatedOn": self._stamp("entity", created),
            "ModifiedOn": self._stamp("entity", modified),
        }

    def change(self, entity: str, record: Record, moment: datetime) -> None:
        """Change a few fields the way day-to-day use of the upstream would."""
        rnd, pick = self._random, self.pick
        if entity == "task":
            record["Status"] = pick(_TASK_STATUSES)
            if rnd() < 0.5:
                record["Priority"] = self.between(1, 5)
            if rnd() < 0.3:
                record["AssigneeId"] = self._ref("user", 0.1)
            record["EstimateHours"] = self.between(1, 160) / 4
        elif entity == "inspection":
            record["Result"] = pick(_RESULTS)
            record["Score"] = None if record["Result"] == "NA" else round(40 + rnd() * 60, 1)
            record["IsFinal"] = rnd() < 0.8
        elif entity == "user":
            record["LastLoginOn"] = self._stamp("user", moment)
            if rnd() < 0.1:
                record["IsActive"] = not record.get("IsActive", True)
        elif entity == "entity":
            record["Name"] = f"{record.get('Name', 'Unnamed')} (renamed)"[:60]
            record["IsArchived"] = rnd() < 0.1


# --- storage ------------------------------------------------------------------------------


def _order_key(us: int, handle: Handle) -> OrderKey:
    if isinstance(handle, tuple):
        return (us, _KEYLESS_RANK, handle[1])
    return (us, 1 if isinstance(handle, str) else 0, handle)


def _handle_of(okey: OrderKey) -> Handle:
    _, rank, key = okey
    return ("bad", cast(int, key)) if rank == _KEYLESS_RANK else key


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _encode(record: Record) -> bytes:
    return _JSON.encode(record).encode("utf-8")


class _Store:
    """One entity's records, each serialized once, kept sorted by (instant, key).

    `order` and `blobs` are parallel lists, so a window is two bisects and a page a slice.
    Inserting into the middle of a list moves pointers with memmove: cheap even at 200k.
    """

    def __init__(self) -> None:
        self.order: list[OrderKey] = []
        self.blobs: list[bytes] = []
        self.where: dict[Handle, OrderKey] = {}

    def load(self, rows: Iterable[tuple[OrderKey, bytes]]) -> None:
        """Add many records at once: one sort instead of one insort per record."""
        merged = sorted([*zip(self.order, self.blobs, strict=True), *rows], key=lambda r: r[0])
        self.order = [okey for okey, _ in merged]
        self.blobs = [blob for _, blob in merged]
        self.where = {_handle_of(okey): okey for okey in self.order}

    def put(self, handle: Handle, okey: OrderKey, blob: bytes) -> None:
        self.discard(handle)
        index = bisect.bisect_left(self.order, okey)
        self.order.insert(index, okey)
        self.blobs.insert(index, blob)
        self.where[handle] = okey

    def discard(self, handle: Handle) -> bool:
        okey = self.where.pop(handle, None)
        if okey is None:
            return False
        index = bisect.bisect_left(self.order, okey)
        del self.order[index]
        del self.blobs[index]
        return True

    def blob(self, handle: Handle) -> bytes:
        return self.blobs[bisect.bisect_left(self.order, self.where[handle])]

    def instant_us(self, handle: Handle) -> int:
        return self.where[handle][0]

    def span(self, from_us: int | None, to_us: int | None, inclusive_to: bool) -> tuple[int, int]:
        """Index range of the records with from_us <= instant < to_us (or <= with inclusive_to)."""
        # Rank -1 sorts before every real key, so (us, -1, 0) is "the start of instant us".
        lo = 0 if from_us is None else bisect.bisect_left(self.order, (from_us, -1, 0))
        if to_us is None:
            return lo, len(self.order)
        hi = bisect.bisect_left(self.order, (to_us + 1 if inclusive_to else to_us, -1, 0))
        return lo, max(lo, hi)


# --- requests, faults and replies ---------------------------------------------------------


class RequestRecord(NamedTuple):
    """One request as the source saw it: the entity ("" for an unknown path), the query
    parameters (first value of each) and the status it answered."""

    entity: str
    params: dict[str, str]
    status: int


@dataclass
class _Fault:
    kind: str  # "fail", "truncate" or "delay"
    remaining: int
    entity: str | None
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error_body(message: str) -> bytes:
    return _encode({"error": message})


def _accepts_gzip(header: str | None) -> bool:
    """Whether Accept-Encoding lists gzip (and not with q=0)."""
    for part in (header or "").split(","):
        coding, _, parameters = part.partition(";")
        if coding.strip().lower() == "gzip":
            quality = parameters.strip().removeprefix("q=") or "1"
            try:
                return float(quality) > 0
            except ValueError:
                return True
    return False


class _Server(ThreadingHTTPServer):
    """The HTTP server, holding its DemoSource and the connections it has open."""

    daemon_threads = True  # a handler stuck in delay_next must not keep the process alive

    def __init__(self, address: tuple[str, int], source: DemoSource) -> None:
        self.source = source
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Cut idle keep-alive connections, whose handler threads would otherwise linger."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a pager reuses one connection for every page
    disable_nagle_algorithm = True  # headers and body are two writes; Nagle would stall the 2nd
    timeout = 60  # seconds an idle keep-alive connection is kept

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        self._server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._server.track(self.connection, False)

    def do_GET(self) -> None:
        self._server.source._serve(self)

    def _not_allowed(self) -> None:
        self.close_connection = True  # a body we did not read would corrupt the next request
        self._server.source._send(self, _Reply(405, _error_body("only GET is supported")))

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


# --- the source ---------------------------------------------------------------------------


class DemoSource:
    """An upstream source with generated data, churn, and knobs for tests (see module doc).

    Naive datetimes given to it (start, end, modified, or returned by clock) are read in the
    source `timezone`. All public methods are thread-safe.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        seed: int = 1,
        counts: Mapping[str, int] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        churn_per_second: float = 0,
        clock: Clock | None = None,
        records_path: str = "",
        inclusive_to: bool = False,
        max_limit: int = 1000,
        timezone: str = "UTC",
        on_request: RequestHook | None = None,
    ) -> None:
        self.host = host
        self._wanted_port = port
        self._api_key = api_key.encode() if api_key else None
        self.zone = _zone(timezone)
        self._clock: Clock = clock or (lambda: datetime.now(UTC))
        # These four may be changed while serving; each request reads them once.
        self.records_path = records_path
        self.inclusive_to = inclusive_to
        self.max_limit = max_limit
        self.on_request = on_request
        self.churn_per_second = churn_per_second

        self._lock = threading.RLock()  # the data, the faker's random state
        self._knob_lock = threading.Lock()  # the faults and the request log
        self._faults: list[_Fault] = []
        self._log: deque[RequestRecord] = deque(maxlen=100_000)  # bounded: the demo runs for days
        self._keyless = 0
        self._stores = {name: _Store() for name in _SPECS}
        self._routes = {path: s.name for s in _SPECS.values() for path in (s.path, s.alias)}
        self._faker = _Faker(random.Random(seed), self.zone)

        end_at = self._moment(end)
        start_at = _aware(start, self.zone) if start else end_at - timedelta(days=30)
        if start_at > end_at:
            raise ValueError("start must not be after end")
        self._populate({**DEFAULT_COUNTS, **(counts or {})}, _to_us(start_at), _to_us(end_at))

        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- lifecycle --

    def start(self) -> DemoSource:
        """Bind and serve in a daemon thread (and start churn if asked). Returns self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self._wanted_port), self)
        server = self._server
        self._spawn("demo-source-http", lambda: server.serve_forever(poll_interval=0.05))
        if self.churn_per_second > 0:
            self._spawn("demo-source-churn", self._churn_loop)
        return self

    def stop(self) -> None:
        """Stop serving and churning; safe to call twice."""
        server, self._server = self._server, None
        self._stopping.set()
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def __enter__(self) -> DemoSource:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the demo source is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, entity: str) -> str:
        """The long URL of an entity, e.g. .../api/TaskDetails/GetTaskDetailsListForSync."""
        return self.base_url + self._spec(entity).path

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(_SPECS)

    # -- data --

    def key_field(self, entity: str) -> str:
        return self._spec(entity).key_field

    def record_count(self, entity: str) -> int:
        with self._lock:
            return len(self._stores[self._spec(entity).name].order)

    def records(
        self,
        entity: str,
        modified_from: datetime | None = None,
        modified_to: datetime | None = None,
    ) -> list[Record]:
        """A deep copy of the records in serving order; optionally only a window, with the
        same bounds as a request (`modified_to` exclusive unless `inclusive_to`)."""
        from_us = None if modified_from is None else _to_us(_aware(modified_from, self.zone))
        to_us = None if modified_to is None else _to_us(_aware(modified_to, self.zone))
        with self._lock:
            store = self._stores[self._spec(entity).name]
            lo, hi = store.span(from_us, to_us, self.inclusive_to)
            blobs = store.blobs[lo:hi]
        return [json.loads(blob) for blob in blobs]

    def get(self, entity: str, key: Key) -> Record:
        with self._lock:
            return dict(json.loads(self._existing(entity, key).blob(key)))

    def modified_at(self, entity: str, key: Key) -> datetime:
        """The true modification instant of a record (aware UTC), whatever its ModifiedOn says."""
        with self._lock:
            return _from_us(self._existing(entity, key).instant_us(key))

    def insert(
        self,
        entity: str,
        overrides: Mapping[str, Any] | None = None,
        modified: datetime | None = None,
    ) -> Record:
        """Create a record modified at `modified` (default: the clock's now; an older instant
        makes a late-visible record). `overrides` replaces fields after generation."""
        spec = self._spec(entity)
        with self._lock:
            moment = self._moment(modified)
            record = self._faker.make(spec.name, self._faker.new_key(spec.name), moment, moment)
            record.update(overrides or {})
            return self._save(spec, record, moment, replacing=None)

    def update(
        self,
        entity: str,
        key: Key,
        changes: Mapping[str, Any] | None = None,
        modified: datetime | None = None,
    ) -> Record:
        """Modify a record at `modified` (default: now). `changes=None` changes a few fields the
        way real use would; `{}` only moves ModifiedOn. The key cannot change."""
        spec = self._spec(entity)
        with self._lock:
            record = self.get(spec.name, key)
            moment = self._moment(modified)
            if changes is None:
                self._faker.change(spec.name, record, moment)
            elif changes.get(spec.key_field, key) != key:
                raise ValueError(f"{entity} {key!r}: the key field {spec.key_field} cannot change")
            record["ModifiedOn"] = spec.stamp(moment, self.zone)
            record.update(changes or {})
            return self._save(spec, record, moment, replacing=key)

    def delete(self, entity: str, key: Key) -> None:
        with self._lock:
            self._existing(entity, key).discard(key)

    def _existing(self, entity: str, key: Key) -> _Store:
        """The entity's store, after checking that it holds `key` (KeyError naming it if not)."""
        store = self._stores[self._spec(entity).name]
        if key not in store.where:
            raise KeyError(f"{entity} {key!r} not found")
        return store

    def bad_records(
        self,
        entity: str,
        n: int,
        kinds: Sequence[str] | None = None,
        modified: datetime | None = None,
    ) -> list[Record]:
        """Insert n records syncd must reject, cycling through `kinds` (default BAD_KINDS):
        missing_key, null_key, bad_key (a key of the wrong type), bad_field (e.g. task
        Priority "high") and bad_timestamp (an unparseable ModifiedOn). Each is served in the
        windows that contain `modified` (default: now)."""
        spec = self._spec(entity)
        kinds = tuple(kinds or BAD_KINDS)
        if unknown := set(kinds) - set(BAD_KINDS):
            raise ValueError(f"unknown bad record kinds: {sorted(unknown)}")
        with self._lock:
            moment = self._moment(modified)
            made = []
            for i in range(n):
                record = self._faker.make(spec.name, self._faker.new_key(spec.name), moment, moment)
                self._break(spec, record, kinds[i % len(kinds)])
                made.append(self._save(spec, record, moment, replacing=None))
            return made

    def _break(self, spec: _EntitySpec, record: Record, kind: str) -> None:
        if kind == "missing_key":
            del record[spec.key_field]
        elif kind == "null_key":
            record[spec.key_field] = None
        elif kind == "bad_key":
            self._keyless += 1
            record[spec.key_field] = f"bad-key-{self._keyless}"
        elif kind == "bad_field":
            name, value = spec.bad_field
            record[name] = value
        else:
            record["ModifiedOn"] = "2024-02-31 25:61:00"

    def _save(
        self, spec: _EntitySpec, record: Record, moment: datetime, replacing: Key | None
    ) -> Record:
        """Store a record under its key (or a private handle if it has no usable key)."""
        store = self._stores[spec.name]
        key = record.get(spec.key_field)
        handle: Handle
        if isinstance(key, int | str) and not isinstance(key, bool):
            handle = key
            if key != replacing and key in store.where:
                raise ValueError(f"{spec.name} {key!r} already exists")
        else:
            self._keyless += 1
            handle = ("bad", self._keyless)
        blob = _encode(record)
        store.put(handle, _order_key(_to_us(moment), handle), blob)
        return dict(json.loads(blob))

    def _moment(self, moment: datetime | None) -> datetime:
        return _aware(moment if moment is not None else self._clock(), self.zone).astimezone(UTC)

    def _spec(self, entity: str) -> _EntitySpec:
        try:
            return _SPECS[entity]
        except KeyError:
            raise KeyError(f"unknown entity {entity!r}; known: {', '.join(_SPECS)}") from None

    def _populate(self, counts: Mapping[str, int], start_us: int, end_us: int) -> None:
        """Generate the initial data set. Keys come first, so references can point anywhere."""
        unknown = set(counts) - set(_SPECS)
        if unknown:
            raise ValueError(f"unknown entities in counts: {sorted(unknown)}")
        faker, span = self._faker, max(1, end_us - start_us)
        keys = {name: [faker.new_key(name) for _ in range(counts[name])] for name in _SPECS}
        for name, entity_keys in keys.items():
            rows = []
            for key in entity_keys:
                modified_us = start_us + int(faker.rng.random() * span)
                # Two records in five were never edited after creation.
                age = 0 if faker.rng.random() < 0.4 else int(faker.rng.random() * 30 * 86400e6)
                record = faker.make(name, key, _from_us(modified_us - age), _from_us(modified_us))
                rows.append((_order_key(modified_us, key), _encode(record)))
            self._stores[name].load(rows)

    # -- churn --

    def _churn_loop(self) -> None:
        """Apply churn_per_second changes per second on average, in small regular steps."""
        owed, last = 0.0, time.monotonic()
        while not self._stopping.wait(0.1):
            now = time.monotonic()
            owed += self.churn_per_second * (now - last)
            last = now
            for _ in range(int(owed)):
                owed -= 1
                try:
                    self._churn_once()
                except Exception:  # the demo must keep going; a bug here shows in the log
                    log.exception("demo source churn failed")

    def _churn_once(self) -> None:
        with self._lock:
            rng = self._faker.rng
            entity = rng.choices(list(_SPECS), weights=(6, 2.5, 1, 0.5))[0]
            order = self._stores[entity].order
            if not order or rng.random() < 0.25:
                self.insert(entity)
                return
            handle = _handle_of(order[int(rng.random() * len(order))])
            if not isinstance(handle, tuple):  # records without a key are left alone
                self.update(entity, handle)

    # -- test knobs --

    def fail_next(
        self,
        n: int,
        status: int = 500,
        entity: str | None = None,
        body: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next n requests (for `entity`, or any) with `status`, e.g. 429 with
        headers={"Retry-After": "2"}. The default body is a JSON error."""
        if isinstance(body, str):
            body = body.encode()
        fault = _Fault("fail", n, self._entity_filter(entity), status=status)
        fault.body = _error_body(f"injected failure (HTTP {status})") if body is None else body
        fault.headers = dict(headers or {})
        self._add_fault(fault)

    def truncate_next(self, n: int, entity: str | None = None) -> None:
        """Answer the next n page requests with a 200 whose JSON body is cut in half."""
        self._add_fault(_Fault("truncate", n, self._entity_filter(entity)))

    def delay_next(self, n: int, seconds: float, entity: str | None = None) -> None:
        """Sleep `seconds` before answering each of the next n requests."""
        self._add_fault(_Fault("delay", n, self._entity_filter(entity), seconds=seconds))

    def clear_faults(self) -> None:
        with self._knob_lock:
            self._faults.clear()

    def requests(self, entity: str | None = None) -> list[RequestRecord]:
        with self._knob_lock:
            return [r for r in self._log if entity is None or r.entity == entity]

    def request_count(self, entity: str | None = None, status: int | None = None) -> int:
        return sum(1 for r in self.requests(entity) if status is None or r.status == status)

    def reset_log(self) -> None:
        with self._knob_lock:
            self._log.clear()

    def _entity_filter(self, entity: str | None) -> str | None:
        return None if entity is None else self._spec(entity).name

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining > 0:
            with self._knob_lock:
                self._faults.append(fault)

    def _take_fault(self, kind: str, entity: str) -> _Fault | None:
        """Use up one matching fault, oldest first."""
        with self._knob_lock:
            for fault in self._faults:
                if fault.kind == kind and fault.entity in (None, entity):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- serving --

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        entity = self._routes.get(url.path.rstrip("/"), "")
        if not entity:
            reply = _Reply(404, _error_body(f"no such path: {url.path}"))
        else:
            reply = self._answer(entity, params, handler.headers.get(API_KEY_HEADER))
        with self._knob_lock:
            self._log.append(RequestRecord(entity, params, reply.status))
        self._send(handler, reply)

    def _answer(self, entity: str, params: dict[str, str], api_key: str | None) -> _Reply:
        """hook → delay → injected failure → API key → page → truncation, in this order."""
        hook = self.on_request
        try:
            if hook is not None:
                hook(entity, dict(params))
        except Exception as exc:
            log.exception("demo source on_request hook failed")
            return _Reply(500, _error_body(f"on_request hook failed: {exc}"))
        if delay := self._take_fault("delay", entity):
            time.sleep(delay.seconds)
        if fail := self._take_fault("fail", entity):
            return _Reply(fail.status, fail.body, dict(fail.headers))
        if self._api_key is not None and not hmac.compare_digest(
            (api_key or "").encode(), self._api_key
        ):
            return _Reply(401, _error_body("missing or invalid API key"))
        try:
            body = self._page(entity, params)
        except _HTTPError as exc:
            return _Reply(exc.status, _error_body(str(exc)))
        if self._take_fault("truncate", entity):
            body = body[: len(body) // 2]
        return _Reply(200, body)

    def _page(self, entity: str, params: Mapping[str, str]) -> bytes:
        from_us = _to_us(self._time_param(params, "fromTime"))
        to_us = _to_us(self._time_param(params, "toTime"))
        limit = min(self._int_param(params, "limit", self.max_limit, minimum=1), self.max_limit)
        offset = self._int_param(params, "offset", 0, minimum=0)
        with self._lock:
            store = self._stores[entity]
            lo, hi = store.span(from_us, to_us, self.inclusive_to)
            first = min(lo + offset, hi)
            blobs = store.blobs[first : min(first + limit, hi)]
        return self._wrap(b"[" + b",".join(blobs) + b"]", len(blobs))

    def _wrap(self, array: bytes, count: int) -> bytes:
        """Put the array at `records_path`, next to a count a client must ignore."""
        path = self.records_path
        if not path:
            return array
        *outer, inner = (json.dumps(name).encode() for name in path.split("."))
        body = b'{%s:%s,"count":%d}' % (inner, array, count)
        for name in reversed(outer):
            body = b'{"success":true,%s:%s}' % (name, body)
        return body

    def _time_param(self, params: Mapping[str, str], name: str) -> datetime:
        text = params.get(name)
        if not text:
            raise _HTTPError(400, f"missing query parameter {name}")
        try:
            return parse_timestamp(text, self.zone)
        except ValueError:
            raise _HTTPError(400, f"{name} is not a time: {text!r}") from None

    @staticmethod
    def _int_param(params: Mapping[str, str], name: str, default: int, minimum: int) -> int:
        text = params.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise _HTTPError(400, f"{name} must be an integer >= {minimum}, not {text!r}")
        return value

    def _send(self, handler: BaseHTTPRequestHandler, reply: _Reply) -> None:
        body, headers = reply.body, dict(reply.headers)
        if body and _accepts_gzip(handler.headers.get("Accept-Encoding")):
            body = gzip.compress(body, compresslevel=1)  # level 1: speed over size, it is local
            headers["Content-Encoding"] = "gzip"
        headers.setdefault("Content-Type", "application/json; charset=utf-8")
        headers["Content-Length"] = str(len(body))
        headers["Vary"] = "Accept-Encoding"
        try:
            handler.send_response(reply.status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:  # the client gave up (e.g. timed out during delay_next)
            handler.close_connection = True


# --- command line -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo_source", description="Serve a demo upstream source for syncd."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=54324)
    parser.add_argument("--api-key-env", metavar="NAME", help="require the key held in $NAME")
    parser.add_argument("--seed", type=int, default=1)
    for name, count in DEFAULT_COUNTS.items():
        parser.add_argument(
            f"--{name}",
            type=int,
            default=count,
            metavar="N",
            help=f"initial {name} records (default {count})",
        )
    parser.add_argument(
        "--span-days",
        type=float,
        default=30.0,
        metavar="D",
        help="spread the initial records over the last D days",
    )
    parser.add_argument(
        "--churn",
        type=float,
        default=0.0,
        metavar="R",
        help="inserts and updates per second (default 0: none)",
    )
    parser.add_argument("--records-path", default="", help='wrap the array, e.g. "data"')
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds every request waits before it is answered, as a remote API's would",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m devtools.demo_source --port N ...`: serve until SIGTERM or SIGINT.

    Returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error, already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"demo_source: ${args.api_key_env} is not set", file=sys.stderr)
            return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    now = datetime.now(UTC)
    source = DemoSource(
        host=args.host,
        port=args.port,
        api_key=api_key,
        seed=args.seed,
        counts={name: getattr(args, name) for name in DEFAULT_COUNTS},
        start=now - timedelta(days=args.span_days),
        end=now,
        churn_per_second=args.churn,
        records_path=args.records_path,
        timezone=args.timezone,
    )
    if args.latency > 0:
        latency = args.latency
        source.on_request = lambda entity, params: time.sleep(latency)
    try:
        source.start()
    except OSError as exc:
        print(f"demo_source: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    # The handler only queues the signal; the main thread waits on the queue and stops.
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.put(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        urls = " ".join(f"{name}={source.url(name)}" for name in source.entities)
        auth = f"api key from ${args.api_key_env}" if api_key else "no api key"
        log.info("demo source serving (%s, churn %s/s): %s", auth, args.churn, urls)
        while True:
            try:
                signum = signals.get(timeout=1.0)
                break
            except queue.Empty:
                continue
        log.info("demo source stopping on %s", signal.Signals(signum).name)
    finally:
        source.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
