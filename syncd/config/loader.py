"""Loading the YAML configuration (CONTRACT §3, §9) into the objects of `syncd.config.model`.

Every problem in the file is collected, not only the first, and reported as
`FILE:LINE: key.path: message` so that `check-config` can list them all at
once. No message ever contains a secret: values read from secret files or
secret environment variables are never echoed, and neither are DSNs or URLs
(which may embed credentials).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg2
import psycopg2.extensions

from syncd.column_types import COLUMN_TYPES, VERSION_TYPES
from syncd.config.model import (
    RAW_COLUMN,
    CalendarStep,
    Column,
    Config,
    Database,
    Entity,
    Http,
    Params,
    Preload,
    Retries,
    Schedule,
    SchedulerConfig,
    Secret,
    SourceConfig,
    Window,
)
from syncd.config.yaml_tree import (
    Fields,
    Map,
    Node,
    Reader,
    Scalar,
    Seq,
    TreeReader,
    compose,
    is_null,
)
from syncd.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/syncd/syncd.yaml"

# --- plain parsers, also for the command line (`--from`, `--chunk`) --------------------------

_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_DURATION_HINT = "expected a whole number and a unit: ms, s, m (minutes), h or d, e.g. 30s or 5m"
# Longer durations only overflow date arithmetic (a lookback of a million days reaches
# before year 1) and mean nothing to a schedule or a timeout.
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """`500ms`, `30s`, `5m` (minutes), `1h`, `1d`, `0s`. A unit is always required."""
    stripped = text.strip()
    match = _DURATION.fullmatch(stripped)
    if match is None:
        if re.fullmatch(r"[0-9]+", stripped):
            raise ValueError(f"{text!r} has no unit; {_DURATION_HINT}")
        if re.fullmatch(r"[0-9]+(mo|w|y)", stripped):
            raise ValueError(f"{text!r} is a calendar step, not a duration; {_DURATION_HINT}")
        raise ValueError(f"{text!r} is not a duration; {_DURATION_HINT}")
    try:
        duration = int(match[1]) * _DURATION_UNITS[match[2]]
    except OverflowError:
        duration = MAX_DURATION * 2
    if duration > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than 3650d, the longest duration syncd accepts")
    return duration


_SIZE = re.compile(r"([0-9]+)(KiB|MiB|GiB)?")
_SIZE_UNITS = {None: 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_size(text: str | int) -> int:
    """Bytes: an int, digits, or digits with `KiB`, `MiB` or `GiB`. `KB`/`MB`
    are refused: it would be unclear whether they mean 1000 or 1024."""
    if isinstance(text, bool):  # bool is an int subclass; `true` is no size
        raise ValueError("a size is a number of bytes, not a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative; a size is a number of bytes")
        return text
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size; expected bytes, or e.g. 512KiB or 16MiB")
    return int(match[1]) * _SIZE_UNITS[match[2]]


_STEP = re.compile(r"([0-9]+)(d|w|mo|y)")
_STEP_UNITS: dict[str, Literal["d", "w", "mo", "y"]] = {"d": "d", "w": "w", "mo": "mo", "y": "y"}
_STEP_MAX = {"d": 36525, "w": 5218, "mo": 1200, "y": 100}  # 100 years


def parse_calendar_step(text: str) -> CalendarStep:
    """`1d`, `2w`, `1mo`, `1y`. `1m` is refused: minutes make no calendar step,
    so it is most likely a month written ambiguously."""
    stripped = text.strip()
    match = _STEP.fullmatch(stripped)
    if match is None:
        if re.fullmatch(r"[0-9]+m", stripped):
            raise ValueError(f"{text!r} is ambiguous; write {stripped}o for months")
        raise ValueError(f"{text!r} is not a calendar step; expected e.g. 1d, 1w, 1mo or 1y")
    count = int(match[1])
    if count < 1:
        raise ValueError(f"{text!r}: a calendar step must be at least 1")
    if count > _STEP_MAX[match[2]]:
        raise ValueError(f"{text!r} is longer than 100 years, the longest calendar step")
    return CalendarStep(count, _STEP_UNITS[match[2]])


_TIMESTAMP = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[T ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?"
    r"(?P<offset>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)


# Years a configured timestamp may name: window and chunk arithmetic stays within what
# datetime holds, and every year formats as four digits that strptime reads back.
FIRST_YEAR, LAST_YEAR = 1900, 9000


def parse_timestamp(text: str, tz: ZoneInfo) -> datetime:
    """`YYYY-MM-DD HH:MM:SS` or ISO 8601 (`T` or space, optional seconds and
    fraction, optional `Z`/`±HH:MM`; a date alone is midnight). Without an
    offset the time is read in `tz`. Always returns an aware datetime: in `tz`
    when no offset was given (so a wall time in a repeated DST hour compares
    unequal to any time in another zone, PEP 495; compare in UTC), else in the
    given fixed offset. Years FIRST_YEAR to LAST_YEAR."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a timestamp; expected YYYY-MM-DD HH:MM:SS or ISO 8601")
    if not FIRST_YEAR <= int(match["year"]) <= LAST_YEAR:
        raise ValueError(f"{text!r}: the year must be between {FIRST_YEAR} and {LAST_YEAR}")
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")  # finer than microseconds: cut
    year, month, day, hour, minute, second = (
        int(match[name] or 0) for name in ("year", "month", "day", "hour", "minute", "second")
    )
    try:
        naive = datetime(year, month, day, hour, minute, second, int(fraction))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date and time ({exc})") from None
    if match["offset"] is None:
        return _localize(naive, tz)
    return naive.replace(tzinfo=_utc_offset(match["offset"], text))


def _localize(naive: datetime, tz: ZoneInfo) -> datetime:
    # A wall time can occur twice (clocks going back) or never (clocks going
    # forward). fold=0 picks the first of two; a skipped time is read with the
    # offset in force before the jump, and the round trip through UTC turns it
    # into the real wall time after the gap (PEP 495). Neither is an error: a
    # timestamp must not be refused for lying near a DST change.
    aware = naive.replace(tzinfo=tz, fold=0)
    return aware.astimezone(UTC).astimezone(tz)


def _utc_offset(text: str, whole: str) -> timezone:
    if text == "Z":
        return UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"{whole!r} has an impossible UTC offset {text}")
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        hint = "expected an IANA name such as UTC or Asia/Kolkata"
        raise ValueError(f"{name!r} is not a known time zone; {hint}") from None


def _time_format(text: str) -> str:
    if "%" not in text:
        raise ValueError(f"{text!r} has no % directive: every timestamp would look the same")
    try:
        sample = datetime(2001, 2, 3, 4, 5, 6).strftime(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a strftime format ({exc})") from None
    try:
        # syncd reads its own toTime back to store it as the watermark.
        datetime.strptime(sample, text)
    except ValueError:
        raise ValueError(f"{text!r} cannot be read back with strptime") from None
    return text


def _time_of_day(text: str) -> time:
    match = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9])", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time of day; expected HH:MM such as 00:00 or 19:14")
    return time(int(match[1]), int(match[2]))


# --- loading ---------------------------------------------------------------------------------


def default_config_path(environ: Mapping[str, str] | None = None) -> str:
    """`$SYNCD_CONFIG`, else /etc/syncd/syncd.yaml (`-c` overrides both)."""
    env = os.environ if environ is None else environ
    return env.get("SYNCD_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration; ConfigError lists every problem found."""
    file = os.fspath(path)
    root, yaml_problems = compose(_read_text(file))
    loader = _Loader(file, os.environ if environ is None else environ)
    for found in yaml_problems:
        loader.problem(found.line, found.path, found.message)
    config = None
    if root is not None:
        config = loader.config(root)
    elif not yaml_problems:
        loader.problem(1, "", "the file is empty; expected a mapping with database and entities")
    if loader.problems or config is None:
        raise ConfigError(loader.sorted_problems())
    return config


MAX_FILE_BYTES = 16 * 1024 * 1024  # a thousand entities take well under 2 MiB


def _read_text(file: str) -> str:
    # These problems have no key path and, for a missing file, no line either.
    try:
        with open(file, "rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            [f"{file}: cannot read the configuration: {exc.strerror or exc.__class__.__name__}"]
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            [f"{file}: the configuration is larger than 16 MiB; is it the right file?"]
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{file}:{line}: the file is not UTF-8 text"]) from None


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # PostgreSQL cuts names at 63 bytes
_IDENTIFIER_RULE = "a plain name (letters, digits and _, at most 63)"
_ENTITY_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_LISTEN = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]*)):(?P<port>[0-9]+)")

MAX_PAGE_SIZE = 100_000  # records per request
_RESERVED_TABLES = ("sync_time", "sync_state", "sync_rejects")  # syncd's own, same schema
_BUILTIN_PATHS = ("/metrics", "/healthz", "/readyz", "/status")

_TOP_KEYS = ("database", "http", "source", "scheduler", "entities")
_DATABASE_KEYS = ("dsn", "password_file", "schema")
_HTTP_KEYS = ("listen", "api_key_file", "api_key_header", "max_body")
_SOURCE_KEYS = (
    "api_key_file",
    "api_key_env",
    "api_key_header",
    "timeout",
    "page_size",
    "params",
    "time_format",
    "timezone",
    "records_path",
    "retries",
    "max_page_bytes",
)
_ENTITY_KEYS = (
    "url",
    "table",
    "primary_key",
    "columns",
    "version_column",
    "keep_raw",
    "schedule",
    "window",
    "preload",
    "ingest_path",
    "source",
)

Columns = tuple[Column, ...]


class _Loader(TreeReader):
    """The syncd schema on top of the generic readers of TreeReader."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        super().__init__(file, environ)
        self.config_dir = Path(file).parent

    # --- value readers --------------------------------------------------------------------

    def duration(self, positive: bool = False) -> Reader[timedelta]:
        def read(node: Node, path: str) -> timedelta | None:
            if not (isinstance(node, Scalar) and isinstance(node.value, str)):
                self.wrong_type(node, path, "a duration such as 30s or 5m")
                return None
            value = self.parsed(parse_duration)(node, path)
            if value is not None and positive and not value:
                self.problem(node.line, path, "must be longer than 0s")
                return None
            return value

        return read

    def size(self, node: Node, path: str) -> int | None:
        value = node.value if isinstance(node, Scalar) else None
        if isinstance(value, str):
            value = self.interpolate(value, node, path)
            if value is None:
                return None
        elif not isinstance(value, int) or isinstance(value, bool):
            self.wrong_type(node, path, "a size such as 16MiB or a number of bytes")
            return None
        try:
            size = parse_size(value)
        except ValueError as exc:
            self.problem(node.line, path, str(exc))
            return None
        if size == 0:
            self.problem(node.line, path, "must be more than 0 bytes")
            return None
        return size

    def page_bytes(self, node: Node, path: str) -> int | None:
        size = self.size(node, path)
        if size is not None and not 1024 <= size <= 1024**3:
            self.problem(node.line, path, "must be between 1KiB and 1GiB")
            return None
        return size

    def timestamp(self, tz: ZoneInfo) -> Reader[datetime]:
        return self.parsed(lambda text: parse_timestamp(text, tz), self.text_as_written)

    def dsn(self, node: Node, path: str) -> str | None:
        value = self.text(node, path)
        if value is None:
            return None
        try:
            psycopg2.extensions.parse_dsn(value)
        except psycopg2.ProgrammingError:
            # libpq's message quotes the part it could not read, which may be the
            # password: say what is wrong without it.
            self.problem(
                node.line,
                path,
                "not a libpq connection string (a postgresql:// URI or key=value pairs; "
                "percent-encode special characters in a URI)",
            )
            return None
        return value

    def url(self, node: Node, path: str) -> str | None:
        value = self.text(node, path)
        # Not quoted back: a URL may carry a token in its query string.
        if value is not None and not _is_http_url(value):
            message = "expected an http:// or https:// URL with a host (and a port up to 65535)"
            self.problem(node.line, path, message)
            return None
        return value

    def listen(self, node: Node, path: str) -> tuple[str, int] | None:
        value = self.text(node, path)
        if value is None:
            return None
        match = _LISTEN.fullmatch(value)
        if match is None or int(match["port"]) > 65535:
            hint = "e.g. 127.0.0.1:9188, [::1]:9188 or :9188"
            self.problem(node.line, path, f"{value!r} is not host:port; {hint}")
            return None
        # An empty host (":9188") means every interface, as for socket.bind.
        return match["ipv6"] or match["host"], int(match["port"])

    def secret_file(self, node: Node, path: str) -> Secret | None:
        name = self.text(node, path)
        if name is None:
            return None
        location = self.secret_location(name)
        # Messages name the file and the reason, never anything read from it
        # (not even UnicodeDecodeError's text, which quotes a byte).
        try:
            value = location.read_bytes().decode("utf-8").strip()
        except FileNotFoundError as exc:
            reason = f"{exc.strerror}{self.credentials_note(name)}"
        except OSError as exc:
            reason = exc.strerror or "unreadable"
        except UnicodeDecodeError:
            reason = "not UTF-8 text"
        else:
            if value:
                return Secret(value)
            reason = "the file is empty"
        self.problem(node.line, path, f"cannot read secret file {str(location)!r}: {reason}")
        return None

    def secret_location(self, name: str) -> Path:
        """systemd's `LoadCredential=` puts files in $CREDENTIALS_DIRECTORY, which
        is searched first; then the folder of the config file."""
        relative = Path(name)
        credentials = self.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and not relative.is_absolute():
            candidate = Path(credentials) / relative
            try:
                found = candidate.exists()
            except OSError:  # e.g. a folder we may not search: reading it will say why
                found = True
            if found:
                return candidate
        return self.config_dir / relative  # an absolute `relative` replaces config_dir

    def credentials_note(self, name: str) -> str:
        credentials = self.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and not Path(name).is_absolute():
            return f" (nor in $CREDENTIALS_DIRECTORY, {credentials})"
        return ""

    def env_secret(self, node: Node, path: str) -> Secret | None:
        name = self.matching(_ENV_NAME, "an environment variable name")(node, path)
        if name is None:
            return None
        value = self.environ.get(name, "").strip()
        if not value:
            self.problem(node.line, path, f"environment variable {name} is not set or empty")
            return None
        return Secret(value)

    # --- sections -------------------------------------------------------------------------

    def config(self, root: Node) -> Config | None:
        top = self.fields(root, "", _TOP_KEYS)
        if top is None:
            return None
        defaults = SourceConfig()
        source = top.opt("source", lambda n, p: self.source(n, p, defaults), defaults)
        return Config(
            path=Path(self.file),
            database=top.req("database", self.database, Database(dsn="")),
            http=top.opt("http", self.http, Http()),
            source=source,
            scheduler=top.opt("scheduler", self.scheduler, SchedulerConfig()),
            entities=top.req("entities", lambda n, p: self.entities(n, p, source), {}),
        )

    def database(self, node: Node, path: str) -> Database | None:
        fields = self.fields(node, path, _DATABASE_KEYS)
        if fields is None:
            return None
        return Database(
            dsn=fields.req("dsn", self.dsn, ""),
            password=fields.opt("password_file", self.secret_file, None),
            schema=fields.opt("schema", self.matching(_IDENTIFIER, _IDENTIFIER_RULE), "public"),
        )

    def http(self, node: Node, path: str) -> Http | None:
        fields = self.fields(node, path, _HTTP_KEYS)
        if fields is None:
            return None
        default = Http()
        host, port = fields.opt("listen", self.listen, (default.host, default.port))
        header = self.matching(_HEADER_NAME, "a header name")
        return Http(
            host=host,
            port=port,
            api_key=fields.opt("api_key_file", self.secret_file, None),
            api_key_header=fields.opt("api_key_header", header, default.api_key_header),
            max_body=fields.opt("max_body", self.size, default.max_body),
        )

    def scheduler(self, node: Node, path: str) -> SchedulerConfig | None:
        fields = self.fields(node, path, ("max_concurrent",))
        if fields is None:
            return None
        default = SchedulerConfig().max_concurrent
        return SchedulerConfig(fields.opt("max_concurrent", self.integer(1), default))

    def source(self, node: Node, path: str, base: SourceConfig) -> SourceConfig | None:
        """The keys given here on top of `base`: the built-in defaults for the
        top-level `source`, the top-level result for an entity's `source`."""
        fields = self.fields(node, path, _SOURCE_KEYS)
        if fields is None:
            return None
        api_key = base.api_key
        if "api_key_file" in fields and "api_key_env" in fields:
            line = fields.entries["api_key_env"].line
            message = "give api_key_file or api_key_env, not both"
            self.problem(line, fields.key_path("api_key_env"), message)
        else:
            api_key = fields.opt("api_key_file", self.secret_file, api_key)
            api_key = fields.opt("api_key_env", self.env_secret, api_key)
        header = self.matching(_HEADER_NAME, "a header name")
        page_size = self.integer(2, " (consecutive pages overlap by one record)", MAX_PAGE_SIZE)
        return SourceConfig(
            api_key=api_key,
            api_key_header=fields.opt("api_key_header", header, base.api_key_header),
            timeout=fields.opt("timeout", self.duration(positive=True), base.timeout),
            page_size=fields.opt("page_size", page_size, base.page_size),
            params=fields.opt("params", lambda n, p: self.params(n, p, base.params), base.params),
            time_format=fields.opt("time_format", self.parsed(_time_format), base.time_format),
            timezone=fields.opt("timezone", self.parsed(_zone), base.timezone),
            records_path=fields.opt(
                "records_path", lambda n, p: self.dotted(n, p, allow_empty=True), base.records_path
            ),
            retries=fields.opt(
                "retries", lambda n, p: self.retries(n, p, base.retries), base.retries
            ),
            max_page_bytes=fields.opt("max_page_bytes", self.page_bytes, base.max_page_bytes),
        )

    def params(self, node: Node, path: str, base: Params) -> Params | None:
        fields = self.fields(node, path, ("from", "to", "limit", "offset"))
        if fields is None:
            return None
        names = {
            "from": fields.opt("from", self.text, base.from_),
            "to": fields.opt("to", self.text, base.to),
            "limit": fields.opt("limit", self.text, base.limit),
            "offset": fields.opt("offset", self.text, base.offset),
        }
        # Only keys set here are checked, so that a clash inherited from the
        # top level is not reported again for every entity.
        for key in fields.entries:
            clash = [other for other in names if other != key and names[other] == names[key]]
            if clash:
                message = f"{names[key]!r} is also the name given to params.{clash[0]}"
                self.problem(fields.entries[key].line, fields.key_path(key), message)
        return Params(
            from_=names["from"], to=names["to"], limit=names["limit"], offset=names["offset"]
        )

    def retries(self, node: Node, path: str, base: Retries) -> Retries | None:
        fields = self.fields(node, path, ("attempts", "backoff", "max_backoff"))
        if fields is None:
            return None
        retries = Retries(
            attempts=fields.opt("attempts", self.integer(1), base.attempts),
            backoff=fields.opt("backoff", self.duration(), base.backoff),
            max_backoff=fields.opt("max_backoff", self.duration(), base.max_backoff),
        )
        touched = fields.get("max_backoff") or fields.get("backoff")
        if touched is not None and retries.max_backoff < retries.backoff:
            message = "must not be shorter than backoff"
            self.problem(touched.line, fields.key_path("max_backoff"), message)
        return retries

    # --- entities -------------------------------------------------------------------------

    def entities(self, node: Node, path: str, source: SourceConfig) -> dict[str, Entity] | None:
        if not isinstance(node, Map):
            self.wrong_type(node, path, "a mapping of entity names to entities")
            return None
        if not node.entries:
            self.problem(node.line, path, "declare at least one entity")
        entities: dict[str, Entity] = {}
        for name, child in node.entries.items():
            if not _ENTITY_NAME.fullmatch(name):
                rule = "lowercase letters, digits and _, starting with a letter"
                self.problem(
                    child.line, f"{path}.{name}", f"{name!r} is not an entity name ({rule})"
                )
            entities[name] = self.entity(name, child, f"{path}.{name}", source)
        self.check_unique(node, entities, "table", lambda entity: entity.table)
        self.check_unique(node, entities, "ingest_path", lambda entity: entity.ingest_path)
        return entities

    def check_unique(
        self,
        node: Map,
        entities: Mapping[str, Entity],
        key: str,
        get: Callable[[Entity], str | None],
    ) -> None:
        """Two entities writing one table, or sharing an ingest path, would step on each other."""
        owners: dict[str, str] = {}
        for name, entity in entities.items():
            value = get(entity)
            if value and value in owners:
                child = node.entries[name]
                line = child.entries[key].line if isinstance(child, Map) else child.line
                message = f"{value!r} is already used by entity {owners[value]}"
                self.problem(line, f"entities.{name}.{key}", message)
            elif value:
                owners[value] = name

    def entity(self, name: str, node: Node, path: str, top_source: SourceConfig) -> Entity:
        placeholder = Entity(name, url="", table="", primary_key=(), columns=(), source=top_source)
        fields = self.fields(node, path, _ENTITY_KEYS) if isinstance(node, Map) else None
        if fields is None:
            self.wrong_type(node, path, "a mapping (url, table, primary_key, columns, ...)")
            return placeholder
        keep_raw = fields.opt("keep_raw", self.boolean, False)
        # None when missing or broken: then primary_key and version_column are not matched.
        columns = fields.req("columns", lambda n, p: self.columns(n, p, keep_raw), None)
        source = fields.opt("source", lambda n, p: self.source(n, p, top_source), top_source)
        tz = source.timezone  # config timestamps without an offset are in the source's zone
        preload = fields.opt("preload", lambda n, p: self.preload(n, p, tz), None)
        if preload is None and "preload" not in fields:
            preload = Preload()
        if preload is not None and not preload.enabled:
            self.check_start(fields)
        return Entity(
            name=name,
            url=fields.req("url", self.url, ""),
            table=fields.req("table", self.table, ""),
            primary_key=fields.req("primary_key", lambda n, p: self.primary_key(n, p, columns), ()),
            columns=columns or (),
            source=source,
            version_column=fields.opt(
                "version_column", lambda n, p: self.version_column(n, p, columns), None
            ),
            keep_raw=keep_raw,
            schedule=fields.opt("schedule", self.schedule, placeholder.schedule),
            window=fields.opt("window", lambda n, p: self.window(n, p, tz), Window()),
            preload=preload or Preload(),
            ingest_path=fields.opt("ingest_path", self.ingest_path, None),
        )

    def check_start(self, fields: Fields) -> None:
        """CONTRACT §3: without preload, the first incremental sync starts at
        window.initial_from, which is then required."""
        window = fields.get("window")
        if isinstance(window, Map) and is_null(window.entries.get("initial_from")):
            line = window.line
        elif window is None:
            line = fields.node.line
        else:  # given (checked by `window`), or the window itself is broken (reported)
            return
        message = "missing required key (needed when preload is not enabled)"
        self.problem(line, fields.key_path("window.initial_from"), message)

    def table(self, node: Node, path: str) -> str | None:
        value = self.matching(_IDENTIFIER, _IDENTIFIER_RULE)(node, path)
        if value in _RESERVED_TABLES:
            self.problem(node.line, path, f"{value!r} is one of syncd's own tables")
            return None
        return value

    def columns(self, node: Node, path: str, keep_raw: bool) -> Columns | None:
        if not isinstance(node, Map):
            self.wrong_type(node, path, "a mapping of column names to {field, type}")
            return None
        if not node.entries:
            self.problem(node.line, path, "declare at least one column")
        for name, spec in node.entries.items():
            if not _IDENTIFIER.fullmatch(name):
                self.problem(spec.line, f"{path}.{name}", f"{name!r} is not {_IDENTIFIER_RULE}")
            elif keep_raw and name == RAW_COLUMN:
                message = f"{RAW_COLUMN!r} is reserved for the whole record when keep_raw is true"
                self.problem(spec.line, f"{path}.{name}", message)
        return tuple(
            self.column(name, spec, f"{path}.{name}") for name, spec in node.entries.items()
        )

    def column(self, name: str, node: Node, path: str) -> Column:
        # A column with problems still counts as declared, so that primary_key
        # and version_column are not also reported as naming an unknown column.
        fields = self.fields(node, path, ("field", "type"))
        if fields is None:
            return Column(name=name, field=(name,), type="")
        return Column(
            name=name,
            field=fields.opt("field", self.dotted, (name,)),
            type=fields.req("type", self.column_type, ""),
        )

    def column_type(self, node: Node, path: str) -> str | None:
        value = self.text(node, path)
        if value is not None and value not in COLUMN_TYPES:
            expected = ", ".join(COLUMN_TYPES)
            self.problem(node.line, path, f"{value!r} is not a type; expected one of {expected}")
            return None
        return value

    def declared(self, node: Node, path: str, columns: Columns | None) -> str | None:
        """The name of one of the columns (not checked when the columns are broken)."""
        name = self.text(node, path)
        if name is not None and columns is not None and name not in {c.name for c in columns}:
            self.problem(node.line, path, f"{name!r} is not a declared column")
            return None
        return name

    def primary_key(self, node: Node, path: str, columns: Columns | None) -> tuple[str, ...] | None:
        if not isinstance(node, Seq):
            self.wrong_type(node, path, "a list of column names")
            return None
        if not node.items:
            self.problem(node.line, path, "name at least one column")
        names: list[str] = []
        for index, item in enumerate(node.items):
            name = self.declared(item, f"{path}[{index}]", columns)
            if name in names:
                self.problem(item.line, f"{path}[{index}]", f"{name!r} is named twice")
            elif name is not None:
                names.append(name)
        return tuple(names)

    def version_column(self, node: Node, path: str, columns: Columns | None) -> str | None:
        name = self.declared(node, path, columns)
        kind = next((column.type for column in columns or () if column.name == name), "")
        if kind and kind not in VERSION_TYPES:  # "" = unknown (a broken column)
            expected = ", ".join(VERSION_TYPES)
            message = f"column {name!r} is {kind}; a version column must be {expected}"
            self.problem(node.line, path, message)
            return None
        return name

    def schedule(self, node: Node, path: str) -> Schedule | None:
        fields = self.fields(node, path, ("every", "at", "timezone"))
        if fields is None:
            return None
        given = [key for key in ("every", "at") if key in fields]
        if len(given) != 1:
            self.problem(node.line, path, "give exactly one of every and at")
            return None
        if given == ["every"]:
            every = fields.opt("every", self.duration(positive=True), None)
            if "timezone" in fields:
                line = fields.entries["timezone"].line
                self.problem(line, fields.key_path("timezone"), "only goes with at, not every")
            return Schedule(every=every)
        return Schedule(
            at=fields.opt("at", self.times, ()),
            timezone=fields.opt("timezone", self.parsed(_zone), ZoneInfo("UTC")),
        )

    def times(self, node: Node, path: str) -> tuple[time, ...] | None:
        if not isinstance(node, Seq) or not node.items:
            self.wrong_type(node, path, 'a list of times of day such as ["00:00", "12:00"]')
            return None
        read = self.parsed(_time_of_day, self.text_as_written)
        times = [read(item, f"{path}[{index}]") for index, item in enumerate(node.items)]
        return tuple(sorted({t for t in times if t is not None}))

    def window(self, node: Node, path: str, tz: ZoneInfo) -> Window | None:
        fields = self.fields(node, path, ("lookback", "lag", "max", "initial_from"))
        if fields is None:
            return None
        default = Window()
        return Window(
            lookback=fields.opt("lookback", self.duration(), default.lookback),
            lag=fields.opt("lag", self.duration(), default.lag),
            max=fields.opt("max", self.duration(positive=True), default.max),
            initial_from=fields.opt("initial_from", self.timestamp(tz), None),
        )

    def preload(self, node: Node, path: str, tz: ZoneInfo) -> Preload | None:
        fields = self.fields(node, path, ("from", "chunk", "enabled"))
        if fields is None:
            return None
        # Writing a preload mapping means wanting a preload, unless it says otherwise.
        enabled = fields.opt("enabled", self.boolean, True)
        read_from = fields.req if enabled else fields.opt
        return Preload(
            enabled=enabled,
            from_=read_from("from", self.timestamp(tz), None),
            chunk=fields.opt("chunk", self.parsed(parse_calendar_step), Preload().chunk),
        )

    def ingest_path(self, node: Node, path: str) -> str | None:
        value = self.text(node, path)
        if value is None:
            return None
        if not value.startswith("/") or any(c.isspace() or c in "?#" for c in value):
            self.problem(node.line, path, f"{value!r} is not a URL path starting with /")
            return None
        if value in _BUILTIN_PATHS or value.startswith(("/v1/ingest/", "/v1/sync/")):
            self.problem(node.line, path, f"{value!r} is one of syncd's own paths")
            return None
        return value


def _is_http_url(text: str) -> bool:
    if any(c.isspace() for c in text):
        return False
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port over 65535)
    except ValueError:  # e.g. a malformed IPv6 host
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
