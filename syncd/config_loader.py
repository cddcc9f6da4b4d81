"""Loading the YAML configuration into the typed objects of `syncd.config`.

Every problem in the file is collected, not only the first, and reported as
`FILE:LINE: key.path: message` so that `check-config` can list them all at
once. No message ever contains a secret: values read from secret files or
secret environment variables are never echoed, and neither are DSNs or URLs
(which may embed credentials).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Mapping
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd.config import (
    COLUMN_TYPES,
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
    SchedulerConfig,
    Schedule,
    Secret,
    SourceConfig,
    Window,
)
from syncd.errors import ConfigError
from syncd.yaml_lines import Map, Node, Scalar, Seq, compose, is_null, join_path

DEFAULT_CONFIG_PATH = "/etc/syncd/syncd.yaml"

T = TypeVar("T")
Reader = Callable[[Node, str], T | None]  # reads a node at a key path; None = problem reported

# --- plain parsers, also used by the command line (`--from`, `--chunk`) -------------------

_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_DURATION_HINT = "expected a whole number and a unit: ms, s, m (minutes), h or d, e.g. 30s or 5m"


def parse_duration(text: str) -> timedelta:
    """`500ms`, `30s`, `5m` (minutes), `1h`, `1d`, `0s`. A unit is always required."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        if re.fullmatch(r"[0-9]+", text.strip()):
            raise ValueError(f"{text!r} has no unit; {_DURATION_HINT}")
        if re.fullmatch(r"[0-9]+(mo|w|y)", text.strip()):
            raise ValueError(f"{text!r}: weeks, months and years are calendar steps; {_DURATION_HINT}")
        raise ValueError(f"{text!r} is not a duration; {_DURATION_HINT}")
    try:
        return int(match[1]) * _DURATION_UNITS[match[2]]
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None


_SIZE = re.compile(r"([0-9]+)(KiB|MiB|GiB)?")
_SIZE_UNITS = {None: 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_size(text: str | int) -> int:
    """Bytes: an int, digits, or digits with `KiB`, `MiB` or `GiB`.
    `KB`/`MB` are refused: it is not clear whether they mean 1000 or 1024."""
    if isinstance(text, bool):  # bool is an int subclass; `true` is no size
        raise ValueError("a size is a number of bytes, not a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative; a size is a number of bytes")
        return text
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a size; expected bytes, optionally with KiB or MiB (e.g. 16MiB)"
        )
    return int(match[1]) * _SIZE_UNITS[match[2]]


_StepUnit = Literal["d", "w", "mo", "y"]
_STEP = re.compile(r"([0-9]+)(d|w|mo|y)")
_STEP_UNITS: dict[str, _StepUnit] = {"d": "d", "w": "w", "mo": "mo", "y": "y"}


def parse_calendar_step(text: str) -> CalendarStep:
    """`1d`, `2w`, `1mo`, `1y`. A bare `m` is refused here: minutes make no
    calendar step, so `1m` is most likely a month written ambiguously."""
    stripped = text.strip()
    match = _STEP.fullmatch(stripped)
    if match is None:
        if re.fullmatch(r"[0-9]+m", stripped):
            raise ValueError(f"{text!r} is ambiguous; write {stripped}o for months")
        raise ValueError(f"{text!r} is not a calendar step; expected e.g. 1d, 1w, 1mo or 1y")
    count = int(match[1])
    if count < 1:
        raise ValueError(f"{text!r}: a calendar step must be at least 1")
    return CalendarStep(count, _STEP_UNITS[match[2]])


_TIMESTAMP = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[T ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?"
    r"(?P<offset>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)


def parse_timestamp(text: str, tz: ZoneInfo) -> datetime:
    """`YYYY-MM-DD HH:MM:SS` or ISO 8601 (`T` or space, optional seconds and
    fraction, optional `Z`/`±HH:MM`; a date alone means midnight). Without an
    offset the time is read in `tz`. Always returns an aware datetime."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a timestamp; expected YYYY-MM-DD HH:MM:SS or ISO 8601"
        )
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")  # beyond microseconds: cut
    try:
        naive = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"] or 0),
            int(match["minute"] or 0),
            int(match["second"] or 0),
            int(fraction),
        )
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date and time ({exc})") from None
    if match["offset"] is None:
        return _localize(naive, tz)
    return naive.replace(tzinfo=_offset(match["offset"], text))


def _localize(naive: datetime, tz: ZoneInfo) -> datetime:
    # A wall time can occur twice (clocks going back) or never (clocks going
    # forward). fold=0 picks the first of two; a skipped time is read with the
    # offset in force before the jump and the round trip through UTC turns it
    # into the real wall time after the gap (PEP 495). Neither case is an error:
    # a timestamp must never be lost for being near a DST change.
    aware = naive.replace(tzinfo=tz, fold=0)
    return aware.astimezone(timezone.utc).astimezone(tz)


def _offset(text: str, whole: str) -> timezone:
    if text == "Z":
        return timezone.utc
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"{whole!r} has an impossible UTC offset {text}")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def default_config_path(environ: Mapping[str, str] | None = None) -> str:
    """`$SYNCD_CONFIG`, else /etc/syncd/syncd.yaml (the `-c` option overrides both)."""
    env = os.environ if environ is None else environ
    return env.get("SYNCD_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration. Raises ConfigError listing every problem."""
    file = os.fspath(path)
    text = _read_text(file)
    root, yaml_problems = compose(text)
    loader = _Loader(file, os.environ if environ is None else environ)
    for found in yaml_problems:
        loader.problem(found.line, found.path, found.message)
    config = None
    if root is None and not yaml_problems:
        loader.problem(1, "", "the file is empty; expected a mapping with database and entities")
    elif root is not None:
        config = loader.config(root)
    if loader.problems or config is None:
        raise ConfigError(loader.sorted_problems())
    return config


def _read_text(file: str) -> str:
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read the configuration: {exc.strerror or exc}"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{file}:{line}: the file is not UTF-8 text"]) from None


# --- validation -----------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_IDENTIFIER = 63  # PostgreSQL silently truncates longer names
_ENTITY_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_TIME_OF_DAY = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_LISTEN = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]*)):(?P<port>[0-9]+)")
# `$$`, `${NAME}`, or a `${` that is neither.
_REFERENCE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{))")

_VERSION_TYPES = ("timestamptz", "timestamp", "date", "integer", "bigint", "numeric", "double precision")
# syncd's own tables live next to the entity tables.
_RESERVED_TABLES = ("sync_time", "sync_state", "sync_rejects")
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
)
_PARAMS_KEYS = ("from", "to", "limit", "offset")
_RETRIES_KEYS = ("attempts", "backoff", "max_backoff")
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
_UTC = ZoneInfo("UTC")


def _describe(node: Node) -> str:
    """What was found, for `expected X, found Y`. Strings are never quoted back."""
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    value = node.value
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({node.text})"
    if isinstance(value, int):
        return f"an integer ({node.text})"
    if isinstance(value, float):
        return f"a number ({node.text})"
    if isinstance(value, date):
        return f"a date ({node.text})"
    if isinstance(value, str):
        return "a string"
    return "another kind of value"


def _unknown_key(key: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    return f"unknown key; expected one of {', '.join(allowed)}"


def _has(node: Node | None, key: str) -> bool:
    return isinstance(node, Map) and not is_null(node.entries.get(key))


class _Loader:
    """Walks the YAML tree, building config objects and collecting problems.

    Readers take (node, key path) and return a value, or None after recording a
    problem; the callers then go on with a default so that the rest of the file
    is still checked. A config built from defaults is never returned, because
    any problem raises ConfigError.
    """

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.config_dir = Path(file).parent
        self.problems: list[tuple[int, str]] = []

    def problem(self, line: int, path: str, message: str) -> None:
        where = f"{path}: " if path else ""
        self.problems.append((line, f"{self.file}:{line}: {where}{message}"))

    def sorted_problems(self) -> list[str]:
        # In file order, each once (a YAML alias can make one node be checked twice).
        ordered = sorted(self.problems, key=lambda problem: problem[0])
        return list(dict.fromkeys(text for _, text in ordered))

    def wrong_type(self, node: Node, path: str, expected: str) -> None:
        self.problem(node.line, path, f"expected {expected}, found {_describe(node)}")

    # --- mappings and keys --------------------------------------------------------------

    def mapping(self, node: Node, path: str, allowed: Collection[str]) -> dict[str, Node] | None:
        """The entries of a mapping with a fixed set of keys; unknown keys are
        reported. An empty value counts as an empty mapping."""
        if is_null(node):
            return {}
        if not isinstance(node, Map):
            self.wrong_type(node, path, "a mapping")
            return None
        for key, child in node.entries.items():
            if key not in allowed:
                self.problem(child.line, join_path(path, key), _unknown_key(key, allowed))
        return {key: child for key, child in node.entries.items() if key in allowed}

    def opt(self, entries: Mapping[str, Node], key: str, path: str, read: Reader[T], default: T) -> T:
        """An optional key. An empty value (`key:` or `key: null`) means "not set"."""
        node = entries.get(key)
        if node is None or is_null(node):
            return default
        value = read(node, join_path(path, key))
        return default if value is None else value

    def req(
        self,
        entries: Mapping[str, Node],
        key: str,
        parent: Node,
        path: str,
        read: Reader[T],
        default: T,
    ) -> T:
        node = entries.get(key)
        if node is None:
            self.problem(parent.line, join_path(path, key), "missing required key")
            return default
        if is_null(node):
            self.problem(node.line, join_path(path, key), "a value is required")
            return default
        return self.opt(entries, key, path, read, default)

    # --- scalars --------------------------------------------------------------------------

    def text(self, node: Node, path: str, allow_empty: bool = False) -> str | None:
        """A string, with `${VAR}` replaced from the environment."""
        if not (isinstance(node, Scalar) and isinstance(node.value, str)):
            self.wrong_type(node, path, "a string")
            return None
        value = self.interpolate(node.value, node, path)
        if value is not None and not value.strip() and not allow_empty:
            self.problem(node.line, path, "must not be empty")
            return None
        return value

    def text_as_written(self, node: Node, path: str) -> str | None:
        """A string for times and timestamps. YAML 1.1 turns an unquoted `12:00`
        into 720 and `2024-01-01` into a date; the characters as written are
        what was meant."""
        if isinstance(node, Scalar) and node.plain and isinstance(node.value, int | date):
            if not isinstance(node.value, bool):
                return node.text
        return self.text(node, path)

    def interpolate(self, text: str, node: Node, path: str) -> str | None:
        failed = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal failed
            if match[1]:
                return "$"
            name = match[2]
            if name is None:
                self.problem(node.line, path, "`${` must be followed by NAME}; write $$ for a `$`")
            elif name not in self.environ:
                self.problem(node.line, path, f"environment variable {name} is not set")
            else:
                return self.environ[name]
            failed = True
            return ""

        result = _REFERENCE.sub(substitute, text)
        return None if failed else result

    def matching(self, pattern: re.Pattern[str], what: str) -> Reader[str]:
        def read(node: Node, path: str) -> str | None:
            value = self.text(node, path)
            if value is not None and not pattern.fullmatch(value):
                self.problem(node.line, path, f"{value!r} is not {what}")
                return None
            return value

        return read

    def identifier(self, node: Node, path: str) -> str | None:
        value = self.matching(_IDENTIFIER, "a plain name (letters, digits and _)")(node, path)
        if value is not None and len(value) > _MAX_IDENTIFIER:
            self.problem(node.line, path, f"is longer than {_MAX_IDENTIFIER} characters")
            return None
        return value

    def dotted(self, node: Node, path: str, allow_empty: bool = False) -> tuple[str, ...] | None:
        value = self.text(node, path, allow_empty=allow_empty)
        if value is None:
            return None
        if value == "":
            return ()
        parts = tuple(value.split("."))
        if not all(parts):
            self.problem(node.line, path, f"{value!r} is not a dotted path (an empty part)")
            return None
        return parts

    def integer(self, minimum: int, why: str = "") -> Reader[int]:
        def read(node: Node, path: str) -> int | None:
            value = node.value if isinstance(node, Scalar) else None
            if not isinstance(value, int) or isinstance(value, bool):
                self.wrong_type(node, path, "an integer")
                return None
            if value < minimum:
                self.problem(node.line, path, f"must be at least {minimum}{why}, found {value}")
                return None
            return value

        return read

    def boolean(self, node: Node, path: str) -> bool | None:
        if isinstance(node, Scalar) and isinstance(node.value, bool):
            return node.value
        self.wrong_type(node, path, "true or false")
        return None

    def parsed(self, parse: Callable[[str], T], get: Reader[str] | None = None) -> Reader[T]:
        """A reader for a string that `parse` turns into a value or refuses with ValueError."""

        def read(node: Node, path: str) -> T | None:
            value = (get or self.text)(node, path)
            if value is None:
                return None
            try:
                return parse(value)
            except ValueError as exc:
                self.problem(node.line, path, str(exc))
                return None

        return read

    def duration(self, positive: bool = False) -> Reader[timedelta]:
        def read(node: Node, path: str) -> timedelta | None:
            if isinstance(node, Scalar) and not isinstance(node.value, str) and node.value is not None:
                self.wrong_type(node, path, "a duration such as 30s or 5m")
                return None
            value = self.parsed(parse_duration)(node, path)
            if value is not None and positive and value <= timedelta(0):
                self.problem(node.line, path, "must be longer than 0s")
                return None
            return value

        return read

    def size(self, node: Node, path: str) -> int | None:
        value = node.value if isinstance(node, Scalar) else None
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.wrong_type(node, path, "a size such as 16MiB or a number of bytes")
            return None
        try:
            size = parse_size(value if isinstance(value, int) else self.interpolate(value, node, path) or "")
        except ValueError as exc:
            self.problem(node.line, path, str(exc))
            return None
        if size <= 0:
            self.problem(node.line, path, "must be more than 0 bytes")
            return None
        return size

    def zone(self, node: Node, path: str) -> ZoneInfo | None:
        return self.parsed(_zone)(node, path)

    def timestamp(self, tz: ZoneInfo) -> Reader[datetime]:
        return self.parsed(lambda text: parse_timestamp(text, tz), self.text_as_written)

    def url(self, node: Node, path: str) -> str | None:
        value = self.text(node, path)
        if value is None:
            return None
        # Not quoted back: a URL may carry a token in its query string.
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.problem(node.line, path, "expected an http:// or https:// URL with a host")
            return None
        return value

    def listen(self, node: Node, path: str) -> tuple[str, int] | None:
        value = self.text(node, path)
        if value is None:
            return None
        match = _LISTEN.fullmatch(value)
        if match is None or int(match["port"]) > 65535:
            self.problem(
                node.line,
                path,
                f"{value!r} is not host:port; e.g. 127.0.0.1:9188, [::1]:9188 or :9188",
            )
            return None
        # An empty host (":9188") means every interface, as for socket.bind.
        return match["ipv6"] or match["host"], int(match["port"])

    # --- secrets --------------------------------------------------------------------------

    def secret_file(self, node: Node, path: str) -> Secret | None:
        name = self.text(node, path)
        if name is None:
            return None
        location = self.secret_location(name)
        # Messages name the file and the reason, never anything read from it.
        try:
            data = location.read_bytes()
        except OSError as exc:
            self.problem(node.line, path, f"cannot read secret file {str(location)!r}: {exc.strerror}")
            return None
        try:
            value = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.problem(node.line, path, f"secret file {str(location)!r} is not UTF-8 text")
            return None
        if not value:
            self.problem(node.line, path, f"secret file {str(location)!r} is empty")
            return None
        return Secret(value)

    def secret_location(self, name: str) -> Path:
        """systemd's `LoadCredential=` puts files in $CREDENTIALS_DIRECTORY, which
        is searched first; then the folder of the config file."""
        relative = Path(name)
        if relative.is_absolute():
            return relative
        credentials = self.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and (Path(credentials) / relative).exists():
            return Path(credentials) / relative
        return self.config_dir / relative

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
        top = self.mapping(root, "", _TOP_KEYS)
        if top is None:
            return None
        for required in ("database", "entities"):
            if required not in top:
                self.problem(root.line, required, "missing required section")
        source = self.opt(top, "source", "", lambda n, p: self.source(n, p, SourceConfig()), SourceConfig())
        return Config(
            path=Path(self.file),
            database=self.opt(top, "database", "", self.database, Database(dsn="")),
            http=self.opt(top, "http", "", self.http, Http()),
            source=source,
            scheduler=self.opt(top, "scheduler", "", self.scheduler, SchedulerConfig()),
            entities=self.opt(top, "entities", "", lambda n, p: self.entities(n, p, source), {}),
        )

    def database(self, node: Node, path: str) -> Database | None:
        entries = self.mapping(node, path, _DATABASE_KEYS)
        if entries is None:
            return None
        return Database(
            dsn=self.req(entries, "dsn", node, path, self.text, ""),
            password=self.opt(entries, "password_file", path, self.secret_file, None),
            schema=self.opt(entries, "schema", path, self.identifier, "public"),
        )

    def http(self, node: Node, path: str) -> Http | None:
        entries = self.mapping(node, path, _HTTP_KEYS)
        if entries is None:
            return None
        default = Http()
        host, port = self.opt(entries, "listen", path, self.listen, (default.host, default.port))
        return Http(
            host=host,
            port=port,
            api_key=self.opt(entries, "api_key_file", path, self.secret_file, None),
            api_key_header=self.opt(
                entries, "api_key_header", path, self.matching(_HEADER_NAME, "a header name"),
                default.api_key_header,
            ),
            max_body=self.opt(entries, "max_body", path, self.size, default.max_body),
        )

    def scheduler(self, node: Node, path: str) -> SchedulerConfig | None:
        entries = self.mapping(node, path, ("max_concurrent",))
        if entries is None:
            return None
        default = SchedulerConfig().max_concurrent
        return SchedulerConfig(self.opt(entries, "max_concurrent", path, self.integer(1), default))

    def source(self, node: Node, path: str, base: SourceConfig) -> SourceConfig | None:
        """The keys given here on top of `base`: the built-in defaults for the
        top-level `source`, the top-level result for an entity's `source`."""
        entries = self.mapping(node, path, _SOURCE_KEYS)
        if entries is None:
            return None
        api_key = base.api_key
        if "api_key_file" in entries and "api_key_env" in entries:
            self.problem(
                entries["api_key_env"].line,
                join_path(path, "api_key_env"),
                "give api_key_file or api_key_env, not both",
            )
        else:
            api_key = self.opt(entries, "api_key_file", path, self.secret_file, api_key)
            api_key = self.opt(entries, "api_key_env", path, self.env_secret, api_key)
        return SourceConfig(
            api_key=api_key,
            api_key_header=self.opt(
                entries, "api_key_header", path, self.matching(_HEADER_NAME, "a header name"),
                base.api_key_header,
            ),
            timeout=self.opt(entries, "timeout", path, self.duration(positive=True), base.timeout),
            page_size=self.opt(
                entries, "page_size", path,
                self.integer(2, " (consecutive pages overlap by one record)"), base.page_size,
            ),
            params=self.opt(entries, "params", path, lambda n, p: self.params(n, p, base.params), base.params),
            time_format=self.opt(entries, "time_format", path, self.parsed(_time_format), base.time_format),
            timezone=self.opt(entries, "timezone", path, self.zone, base.timezone),
            records_path=self.opt(
                entries, "records_path", path, lambda n, p: self.dotted(n, p, allow_empty=True),
                base.records_path,
            ),
            retries=self.opt(entries, "retries", path, lambda n, p: self.retries(n, p, base.retries), base.retries),
        )

    def params(self, node: Node, path: str, base: Params) -> Params | None:
        entries = self.mapping(node, path, _PARAMS_KEYS)
        if entries is None:
            return None
        names = {
            "from": self.opt(entries, "from", path, self.text, base.from_),
            "to": self.opt(entries, "to", path, self.text, base.to),
            "limit": self.opt(entries, "limit", path, self.text, base.limit),
            "offset": self.opt(entries, "offset", path, self.text, base.offset),
        }
        # Only keys set here are checked, so a clash inherited from the top
        # level is not reported again for every entity.
        for key in entries:
            clash = [other for other in names if other != key and names[other] == names[key]]
            if clash:
                self.problem(
                    entries[key].line, join_path(path, key),
                    f"{names[key]!r} is also the name given to {clash[0]}",
                )
        return Params(from_=names["from"], to=names["to"], limit=names["limit"], offset=names["offset"])

    def retries(self, node: Node, path: str, base: Retries) -> Retries | None:
        entries = self.mapping(node, path, _RETRIES_KEYS)
        if entries is None:
            return None
        retries = Retries(
            attempts=self.opt(entries, "attempts", path, self.integer(1), base.attempts),
            backoff=self.opt(entries, "backoff", path, self.duration(), base.backoff),
            max_backoff=self.opt(entries, "max_backoff", path, self.duration(), base.max_backoff),
        )
        touched = entries.get("max_backoff") or entries.get("backoff")
        if touched is not None and retries.max_backoff < retries.backoff:
            self.problem(touched.line, join_path(path, "max_backoff"), "must not be shorter than backoff")
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
            entity_path = join_path(path, name)
            if not _ENTITY_NAME.fullmatch(name):
                self.problem(
                    child.line, entity_path,
                    f"{name!r} is not an entity name (lowercase letters, digits and _, "
                    "starting with a letter)",
                )
            entities[name] = self.entity(name, child, entity_path, source)
        self.check_unique(node, entities, "table", lambda entity: entity.table)
        self.check_unique(node, entities, "ingest_path", lambda entity: entity.ingest_path)
        return entities

    def check_unique(
        self, node: Map, entities: Mapping[str, Entity], key: str, get: Callable[[Entity], str | None]
    ) -> None:
        """Two entities writing one table, or sharing an ingest path, would
        overwrite each other."""
        owners: dict[str, str] = {}
        for name, entity in entities.items():
            value = get(entity)
            if not value:
                continue
            if value in owners:
                child = node.entries[name]
                line = child.entries[key].line if isinstance(child, Map) else child.line
                self.problem(line, f"entities.{name}.{key}", f"{value!r} is already used by entity {owners[value]}")
            else:
                owners[value] = name

    def entity(self, name: str, node: Node, path: str, top_source: SourceConfig) -> Entity:
        placeholder = Entity(name=name, url="", table="", primary_key=(), columns=(), source=top_source)
        if is_null(node) or not isinstance(node, Map):
            self.wrong_type(node, path, "a mapping (url, table, primary_key, columns, ...)")
            return placeholder
        entries = self.mapping(node, path, _ENTITY_KEYS) or {}
        keep_raw = self.opt(entries, "keep_raw", path, self.boolean, False)
        columns = self.req(entries, "columns", node, path, lambda n, p: self.columns(n, p, keep_raw), None)
        source = self.opt(entries, "source", path, lambda n, p: self.source(n, p, top_source), top_source)
        preload = self.opt(entries, "preload", path, lambda n, p: self.preload(n, p, source.timezone), None)
        window = self.opt(entries, "window", path, lambda n, p: self.window(n, p, source.timezone), Window())
        if preload is None and not _has(node, "preload"):
            preload = Preload()
            self.check_start(entries.get("window") or node, path)
        entity = Entity(
            name=name,
            url=self.req(entries, "url", node, path, self.url, ""),
            table=self.req(entries, "table", node, path, self.table, ""),
            primary_key=self.req(
                entries, "primary_key", node, path, lambda n, p: self.primary_key(n, p, columns), ()
            ),
            columns=columns or (),
            source=source,
            version_column=self.opt(
                entries, "version_column", path, lambda n, p: self.version_column(n, p, columns), None
            ),
            keep_raw=keep_raw,
            schedule=self.opt(entries, "schedule", path, self.schedule, placeholder.schedule),
            window=window,
            preload=preload or Preload(),
            ingest_path=self.opt(entries, "ingest_path", path, self.ingest_path, None),
        )
        if entity.preload.enabled is False and _has(node, "preload"):
            self.check_start(entries.get("window") or node, path)
        return entity

    def check_start(self, window: Node, path: str) -> None:
        """CONTRACT §3: without preload, incremental sync starts at window.initial_from."""
        if not _has(window, "initial_from") and not (isinstance(window, Map) and "initial_from" in window.entries):
            self.problem(
                window.line,
                join_path(path, "window.initial_from"),
                "missing required key (needed when preload is not enabled: "
                "it is where the first sync starts)",
            )

    def table(self, node: Node, path: str) -> str | None:
        value = self.identifier(node, path)
        if value in _RESERVED_TABLES:
            self.problem(node.line, path, f"{value!r} is one of syncd's own tables")
            return None
        return value

    def columns(self, node: Node, path: str, keep_raw: bool) -> tuple[Column, ...] | None:
        if not isinstance(node, Map):
            self.wrong_type(node, path, "a mapping of column names to {field, type}")
            return None
        if not node.entries:
            self.problem(node.line, path, "declare at least one column")
        columns = []
        for name, spec in node.entries.items():
            column_path = join_path(path, name)
            if not _IDENTIFIER.fullmatch(name) or len(name) > _MAX_IDENTIFIER:
                self.problem(spec.line, column_path, f"{name!r} is not a plain name (letters, digits and _)")
            elif keep_raw and name == RAW_COLUMN:
                self.problem(spec.line, column_path, f"{RAW_COLUMN!r} is reserved for the whole record with keep_raw")
            columns.append(self.column(name, spec, column_path))
        return tuple(columns)

    def column(self, name: str, node: Node, path: str) -> Column:
        # A column with problems is still declared, so that primary_key and
        # version_column are not reported as naming an unknown column too.
        entries = self.mapping(node, path, ("field", "type")) or {}
        if isinstance(node, Map) or is_null(node):
            field = self.opt(entries, "field", path, self.dotted, (name,))
            kind = self.req(entries, "type", node, path, self.column_type, "")
            return Column(name=name, field=field, type=kind)
        return Column(name=name, field=(name,), type="")

    def column_type(self, node: Node, path: str) -> str | None:
        value = self.text(node, path)
        if value is not None and value not in COLUMN_TYPES:
            self.problem(node.line, path, f"{value!r} is not a type; expected one of {', '.join(COLUMN_TYPES)}")
            return None
        return value

    def declared(self, node: Node, path: str, columns: tuple[Column, ...] | None) -> str | None:
        """A name that must be one of the entity's columns (unchecked when the columns are broken)."""
        name = self.text(node, path)
        if name is not None and columns is not None and name not in {c.name for c in columns}:
            self.problem(node.line, path, f"{name!r} is not a declared column")
            return None
        return name

    def primary_key(self, node: Node, path: str, columns: tuple[Column, ...] | None) -> tuple[str, ...] | None:
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

    def version_column(self, node: Node, path: str, columns: tuple[Column, ...] | None) -> str | None:
        name = self.declared(node, path, columns)
        kind = next((c.type for c in columns or () if c.name == name), "")
        if name is not None and kind and kind not in _VERSION_TYPES:
            self.problem(
                node.line, path,
                f"column {name!r} is {kind}; a version column must be one of {', '.join(_VERSION_TYPES)}",
            )
            return None
        return name

    def schedule(self, node: Node, path: str) -> Schedule | None:
        entries = self.mapping(node, path, ("every", "at", "timezone"))
        if entries is None:
            return None
        given = [key for key in ("every", "at") if not is_null(entries.get(key))]
        if len(given) != 1:
            self.problem(node.line, path, "give exactly one of every and at")
            return None
        if given == ["every"]:
            if "timezone" in entries:
                self.problem(entries["timezone"].line, join_path(path, "timezone"), "only goes with at")
            return Schedule(every=self.opt(entries, "every", path, self.duration(positive=True), None))
        return Schedule(
            at=self.opt(entries, "at", path, self.times, ()),
            timezone=self.opt(entries, "timezone", path, self.zone, _UTC),
        )

    def times(self, node: Node, path: str) -> tuple[time, ...] | None:
        if not isinstance(node, Seq) or not node.items:
            self.wrong_type(node, path, 'a list of times of day such as ["00:00", "12:00"]')
            return None
        read = self.parsed(_time_of_day, self.text_as_written)
        times = [read(item, f"{path}[{index}]") for index, item in enumerate(node.items)]
        return tuple(sorted({t for t in times if t is not None}))

    def window(self, node: Node, path: str, tz: ZoneInfo) -> Window | None:
        entries = self.mapping(node, path, ("lookback", "lag", "max", "initial_from"))
        if entries is None:
            return None
        default = Window()
        return Window(
            lookback=self.opt(entries, "lookback", path, self.duration(), default.lookback),
            lag=self.opt(entries, "lag", path, self.duration(), default.lag),
            max=self.opt(entries, "max", path, self.duration(positive=True), default.max),
            initial_from=self.opt(entries, "initial_from", path, self.timestamp(tz), None),
        )

    def preload(self, node: Node, path: str, tz: ZoneInfo) -> Preload | None:
        entries = self.mapping(node, path, ("from", "chunk", "enabled"))
        if entries is None:
            return None
        # Writing a preload mapping means wanting a preload, unless it says otherwise.
        enabled = self.opt(entries, "enabled", path, self.boolean, True)
        if enabled:
            start = self.req(entries, "from", node, path, self.timestamp(tz), None)
        else:
            start = self.opt(entries, "from", path, self.timestamp(tz), None)
        chunk = self.opt(entries, "chunk", path, self.parsed(parse_calendar_step), Preload().chunk)
        return Preload(enabled=enabled, from_=start, chunk=chunk)

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


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name!r} is not a known time zone; expected an IANA name such as UTC or Asia/Kolkata") from None


def _time_format(text: str) -> str:
    if "%" not in text:
        raise ValueError(f"{text!r} has no % directive; every timestamp would format the same")
    try:
        datetime(2000, 1, 1).strftime(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a strftime format ({exc})") from None
    return text


def _time_of_day(text: str) -> time:
    match = _TIME_OF_DAY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time of day; expected HH:MM such as 00:00 or 19:14")
    return time(int(match[1]), int(match[2]))
