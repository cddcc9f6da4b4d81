"""The configuration as typed, immutable objects. Loading and validation:
`syncd.config.loader`; the column types it accepts: `syncd.columns.types`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

# The column that holds the whole record when `keep_raw` is on, and its type.
RAW_COLUMN = "raw"
RAW_COLUMN_TYPE = "jsonb"


class Secret:
    """A secret value that never shows itself in a repr, a log line or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Retries:
    attempts: int = 6  # total tries of one request, the first included
    backoff: timedelta = timedelta(milliseconds=500)
    max_backoff: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class Params:
    """Names of the query parameters sent to the source."""

    from_: str = "fromTime"
    to: str = "toTime"
    limit: str = "limit"
    offset: str = "offset"


@dataclass(frozen=True)
class SourceConfig:
    api_key: Secret | None = None
    api_key_header: str = "X-API-KEY"
    timeout: timedelta = timedelta(seconds=30)
    page_size: int = 1000
    params: Params = field(default_factory=Params)
    time_format: str = "%Y-%m-%d %H:%M:%S"
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    records_path: tuple[str, ...] = ()  # () = the body is the array
    retries: Retries = field(default_factory=Retries)
    max_page_bytes: int | None = None  # None: page_size records of 16 KiB, 1 to 256 MiB

    @property
    def page_bytes_limit(self) -> int:
        """The most bytes (decompressed) a page may take; a larger one is refused."""
        if self.max_page_bytes is not None:
            return self.max_page_bytes
        return min(max(1024**2, self.page_size * 16 * 1024), 256 * 1024**2)


@dataclass(frozen=True)
class Column:
    name: str
    field: tuple[str, ...]  # dotted path into the record, split
    type: str  # one of syncd.columns.types.COLUMN_TYPES


@dataclass(frozen=True)
class Schedule:
    """Exactly one of `every` and `at` is set."""

    every: timedelta | None = None
    at: tuple[time, ...] = ()
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))


@dataclass(frozen=True)
class Window:
    lookback: timedelta = timedelta(minutes=1)
    lag: timedelta = timedelta(0)
    max: timedelta = timedelta(days=1)
    initial_from: datetime | None = None  # aware


@dataclass(frozen=True)
class CalendarStep:
    n: int
    unit: Literal["d", "w", "mo", "y"]

    def __str__(self) -> str:
        return f"{self.n}{self.unit}"


@dataclass(frozen=True)
class Preload:
    enabled: bool = False
    from_: datetime | None = None  # aware
    chunk: CalendarStep = field(default_factory=lambda: CalendarStep(1, "mo"))


@dataclass(frozen=True)
class Entity:
    name: str
    url: str
    table: str
    primary_key: tuple[str, ...]
    columns: tuple[Column, ...]
    source: SourceConfig  # top-level source merged with this entity's overrides
    version_column: str | None = None
    keep_raw: bool = False
    schedule: Schedule = field(default_factory=lambda: Schedule(every=timedelta(minutes=5)))
    window: Window = field(default_factory=Window)
    preload: Preload = field(default_factory=Preload)
    ingest_path: str | None = None


def redact_dsn(dsn: str) -> str:
    """The DSN with any inline password masked (URI `user:pw@` or `password=pw`)."""
    dsn = re.sub(r"^(\w+://[^:/@]*):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


@dataclass(frozen=True, repr=False)
class Database:
    dsn: str
    password: Secret | None = None
    schema: str = "public"

    def __repr__(self) -> str:
        return (
            f"Database(dsn={redact_dsn(self.dsn)!r}, password={self.password!r}, "
            f"schema={self.schema!r})"
        )


@dataclass(frozen=True)
class Http:
    host: str = "127.0.0.1"
    port: int = 9188
    api_key: Secret | None = None
    api_key_header: str = "X-API-KEY"
    max_body: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class SchedulerConfig:
    max_concurrent: int = 4


@dataclass(frozen=True)
class Config:
    path: Path
    database: Database
    http: Http
    source: SourceConfig
    scheduler: SchedulerConfig
    entities: Mapping[str, Entity]  # in the order the YAML declares them
