"""Loading and validating the YAML configuration (docs/configuration.md)."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from syncd.config import http_paths
from syncd.config.loader import default_config_path, load_config
from syncd.config.model import (
    CalendarStep,
    Column,
    Database,
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
from syncd.config.values import (
    parse_calendar_step,
    parse_duration,
    parse_size,
    parse_timestamp,
)
from syncd.errors import ConfigError

KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")

# A full configuration, as an operator would write it (see docs/configuration.md).
FULL = """\
database:
  dsn: "postgresql://postgres@localhost:5433/LT_sync_data"   # libpq URI or key=value
  password_file: db-password          # optional
  schema: public                      # optional

http:
  listen: "127.0.0.1:9188"            # metrics, health, status, ingest, admin
  api_key_file: ingest-api-key        # inbound key; without it ingest/admin answer 403
  api_key_header: X-API-KEY
  max_body: 16MiB

source:                               # defaults for every entity; any key overridable per entity
  api_key_file: source-api-key        # or api_key_env: SYNCD_SOURCE_API_KEY
  api_key_header: X-API-KEY
  timeout: 30s
  page_size: 1000
  params: {from: fromTime, to: toTime, limit: limit, offset: offset}
  time_format: "%Y-%m-%d %H:%M:%S"
  timezone: UTC
  records_path: ""                    # "" = the body is the array
  retries: {attempts: 6, backoff: 500ms, max_backoff: 60s}

scheduler:
  max_concurrent: 4                   # entity jobs running at once

entities:
  task:
    url: "http://localhost:54324/api/TaskDetails/GetTaskDetailsListForSync"
    table: task_details
    primary_key: [task_id]
    columns:                          # column: source field (dotted path) and PostgreSQL type
      task_id:     {field: TaskId, type: bigint}
      title:       {field: Title, type: text}
      status:      {field: Status, type: text}
      modified_on: {field: ModifiedOn, type: timestamptz}
    version_column: modified_on       # optional: a row is never replaced by an older version
    keep_raw: false                   # optional: also store the whole record in a jsonb column
    schedule: {every: 1m}             # or {at: ["00:00", "12:00"], timezone: "Asia/Kolkata"}
    window: {lookback: 2m, lag: 0s, max: 1d}
    preload: {from: "2024-01-01 00:00:00", chunk: 1mo, enabled: true}
    ingest_path: /insertTaskDetailsBulk   # optional extra path for push ingest
"""

# The least a valid file can say.
MINIMAL = """\
database:
  dsn: postgresql://localhost/db
entities:
  task:
    url: http://source.test/tasks
    table: task_details
    primary_key: [task_id]
    columns:
      task_id: {field: TaskId, type: bigint}
      title: {field: Title, type: text}
    window: {initial_from: "2024-01-01 00:00:00"}
"""

SECRETS = {
    "db-password": "db-s3cret\n",
    "ingest-api-key": "ingest-s3cret\n",
    "source-api-key": "  source-s3cret  \n",
}


def write(folder: Path, text: str, name: str = "syncd.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_secrets(folder: Path, secrets: dict[str, str] = SECRETS) -> None:
    for name, content in secrets.items():
        (folder / name).write_text(content, encoding="utf-8")


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, {} if environ is None else environ)
    return caught.value.problems


def line_of(text: str, needle: str) -> int:
    """The 1-based number of the first line of `text` containing `needle`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")


def assert_problem(found: list[str], path: Path, line: int, key_path: str, message: str) -> None:
    prefix = f"{path}:{line}: {key_path}: "
    assert any(p.startswith(prefix) and message in p for p in found), (
        f"no problem starting {prefix!r} and saying {message!r} in:\n" + "\n".join(found)
    )


# --- valid files ---------------------------------------------------------------------------


def test_the_contract_example_loads(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    path = write(tmp_path, FULL)

    config = load_config(path, {})

    assert config.path == path
    assert config.database == Database(
        dsn="postgresql://postgres@localhost:5433/LT_sync_data",
        password=Secret("db-s3cret"),
        schema="public",
    )
    assert config.http == Http(
        host="127.0.0.1",
        port=9188,
        api_key=Secret("ingest-s3cret"),
        api_key_header="X-API-KEY",
        max_body=16 * 1024 * 1024,
    )
    assert config.source == SourceConfig(api_key=Secret("source-s3cret"))
    assert config.scheduler == SchedulerConfig(max_concurrent=4)
    assert list(config.entities) == ["task"]
    task = config.entities["task"]
    assert task.url == "http://localhost:54324/api/TaskDetails/GetTaskDetailsListForSync"
    assert task.table == "task_details"
    assert task.primary_key == ("task_id",)
    assert task.columns == (
        Column("task_id", ("TaskId",), "bigint"),
        Column("title", ("Title",), "text"),
        Column("status", ("Status",), "text"),
        Column("modified_on", ("ModifiedOn",), "timestamptz"),
    )
    assert task.source == config.source
    assert task.version_column == "modified_on"
    assert task.keep_raw is False
    assert task.schedule == Schedule(every=timedelta(minutes=1))
    assert task.window == Window(lookback=timedelta(minutes=2), lag=timedelta(0))
    assert task.preload == Preload(
        enabled=True, from_=datetime(2024, 1, 1, tzinfo=UTC), chunk=CalendarStep(1, "mo")
    )
    assert task.preload.from_ is not None and task.preload.from_.utcoffset() == timedelta(0)
    assert task.ingest_path == "/insertTaskDetailsBulk"


def test_defaults_fill_what_a_minimal_file_leaves_out(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {})

    assert config.database == Database(dsn="postgresql://localhost/db")
    assert config.http == Http()
    assert config.source == SourceConfig()
    assert config.scheduler == SchedulerConfig()
    task = config.entities["task"]
    assert task.schedule == Schedule(every=timedelta(minutes=5))
    assert task.window == Window(initial_from=datetime(2024, 1, 1, tzinfo=UTC))
    assert task.preload == Preload(enabled=False)
    assert task.version_column is None and task.ingest_path is None and not task.keep_raw


def test_a_column_field_defaults_to_its_name_and_dots_split_paths(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "title: {field: Title, type: text}",
        "title: {type: text}\n      owner: {field: owner.name, type: text}",
    )
    task = load_config(write(tmp_path, text), {}).entities["task"]
    fields = {column.name: column.field for column in task.columns}
    assert fields["title"] == ("title",) and fields["owner"] == ("owner", "name")


def test_entities_keep_the_order_of_the_file(tmp_path: Path) -> None:
    entity = MINIMAL.split("entities:\n")[1]
    names = ["user", "task", "inspection", "entity"]
    text = "database: {dsn: 'dbname=x'}\nentities:\n" + "".join(
        entity.replace("  task:", f"  {name}:").replace("task_details", f"t_{name}")
        for name in names
    )
    assert list(load_config(write(tmp_path, text), {}).entities) == names


def test_an_entity_source_overrides_key_by_key(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    text = MINIMAL.replace(
        "entities:\n",
        """\
source:
  api_key_file: source-api-key
  page_size: 500
  params: {from: since, to: until}
  retries: {attempts: 3, backoff: 1s}
entities:
""",
    ) + textwrap.indent(
        textwrap.dedent("""\
        other:
          url: https://source.test/other
          table: other
          primary_key: [id]
          columns: {id: {type: uuid}}
          source:
            api_key_env: OTHER_KEY
            timezone: Asia/Kolkata
            params: {limit: top}
            retries: {max_backoff: 5s}
            records_path: result.items
          window: {initial_from: "2024-01-01 00:00:00"}
        """),
        "  ",
    )
    config = load_config(write(tmp_path, text), {"OTHER_KEY": "other-s3cret"})

    top = config.source
    assert config.entities["task"].source == top
    other = config.entities["other"].source
    assert other.api_key == Secret("other-s3cret") and top.api_key == Secret("source-s3cret")
    assert other.page_size == 500  # inherited
    assert other.timezone == KOLKATA and top.timezone == ZoneInfo("UTC")
    assert other.params == Params(from_="since", to="until", limit="top", offset="offset")
    assert other.retries == Retries(
        attempts=3, backoff=timedelta(seconds=1), max_backoff=timedelta(seconds=5)
    )
    assert other.records_path == ("result", "items")
    # Timestamps in the config are read in the entity's own source time zone.
    initial = config.entities["other"].window.initial_from
    assert initial == datetime(2023, 12, 31, 18, 30, tzinfo=UTC)


def test_schedule_at_accepts_unquoted_times(tmp_path: Path) -> None:
    # YAML 1.1 reads an unquoted 12:00 as the integer 720; it must still mean noon.
    text = MINIMAL.replace(
        "    window:",
        '    schedule: {at: [19:14, "00:00", 12:00], timezone: Asia/Kolkata}\n    window:',
    )
    schedule = load_config(write(tmp_path, text), {}).entities["task"].schedule
    assert schedule == Schedule(at=(time(0), time(12), time(19, 14)), timezone=KOLKATA)


def test_unquoted_timestamps_are_read_in_the_source_zone(tmp_path: Path) -> None:
    # Unquoted, YAML makes a (UTC) datetime of it; the source zone must win.
    text = MINIMAL.replace('"2024-01-01 00:00:00"', "2024-01-01 00:00:00").replace(
        "entities:\n", "source: {timezone: Asia/Kolkata}\nentities:\n"
    )
    task = load_config(write(tmp_path, text), {}).entities["task"]
    assert task.window.initial_from == datetime(2023, 12, 31, 18, 30, tzinfo=UTC)


def test_preload_without_enabled_is_enabled_and_needs_no_initial_from(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        '    window: {initial_from: "2024-01-01 00:00:00"}',
        "    preload: {from: 2023-06-01, chunk: 2w}",
    )
    task = load_config(write(tmp_path, text), {}).entities["task"]
    assert task.preload == Preload(
        enabled=True, from_=datetime(2023, 6, 1, tzinfo=UTC), chunk=CalendarStep(2, "w")
    )
    assert task.window.initial_from is None


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("127.0.0.1:9188", "127.0.0.1", 9188), ("[::1]:9188", "::1", 9188), (":9000", "", 9000)],
)
def test_listen_forms(tmp_path: Path, listen: str, host: str, port: int) -> None:
    text = MINIMAL + f'http: {{listen: "{listen}", max_body: 1024}}\n'
    http = load_config(write(tmp_path, text), {}).http
    assert (http.host, http.port, http.max_body) == (host, port, 1024)


def test_empty_optional_values_mean_the_default(tmp_path: Path) -> None:
    text = MINIMAL + "http:\nsource:\n  timeout:\n"
    config = load_config(write(tmp_path, text), {})
    assert config.http == Http() and config.source == SourceConfig()


def test_yaml_merge_keys_share_settings(tmp_path: Path) -> None:
    text = MINIMAL.replace("  task:\n", "  task: &base\n")
    text += "  other:\n    <<: *base\n    table: other\n"
    config = load_config(write(tmp_path, text), {})
    assert config.entities["other"].table == "other"
    assert config.entities["other"].columns == config.entities["task"].columns


# --- problems: each names the key path and the line ------------------------------------------

# (old, new) replace text in MINIMAL (a list: several replacements); the line marked
# `# <--`, or else the first line of the first `new`, is the one reported.
CASES = [
    (
        "unknown key",
        (
            "title: {field: Title, type: text}",
            "title: {field: Title, type: text, colour: red} # <--",
        ),
        "entities.task.columns.title.colour",
        "unknown key",
    ),
    (
        "unknown top-level key",
        ("database:\n", "databse: {}  # <--\ndatabase:\n"),
        "databse",
        "unknown key (did you mean database?)",
    ),
    (
        "unknown key in an entity source",
        ("    window:", "    source: {page_sise: 5}  # <--\n    window:"),
        "entities.task.source.page_sise",
        "did you mean page_size?",
    ),
    (
        "a string for an integer",
        ("entities:\n", "source:\n  page_size: '1000'  # <--\nentities:\n"),
        "source.page_size",
        "expected an integer, found a string",
    ),
    (
        "a boolean for an integer",
        ("entities:\n", "scheduler:\n  max_concurrent: true  # <--\nentities:\n"),
        "scheduler.max_concurrent",
        "expected an integer, found a boolean (true)",
    ),
    (
        "a string for a boolean",
        ("    table: task_details\n", "    table: task_details\n    keep_raw: 'yes'  # <--\n"),
        "entities.task.keep_raw",
        "expected true or false, found a string",
    ),
    (
        "a list for a mapping",
        ("    columns:\n", "    columns: [task_id, title]  # <--\n    colum:\n"),
        "entities.task.columns",
        "expected a mapping of column names to {field, type}, found a list",
    ),
    (
        "a missing required key",
        ("  task:\n    url: http://source.test/tasks\n", "  task:  # <--\n"),
        "entities.task.url",
        "missing required key",
    ),
    (
        "a missing dsn",
        ("database:\n  dsn: postgresql://localhost/db\n", "database:  # <--\n  schema: public\n"),
        "database.dsn",
        "missing required key",
    ),
    (
        "an empty required value",
        ("    table: task_details", "    table:  # <--"),
        "entities.task.table",
        "a value is required",
    ),
    (
        "a bad type name",
        ("title: {field: Title, type: text}", "title: {field: Title, type: txet}  # <--"),
        "entities.task.columns.title.type",
        "'txet' is not a type; expected one of text, integer, bigint,",
    ),
    (
        "a missing column type",
        ("title: {field: Title, type: text}", "title: {field: Title}  # <--"),
        "entities.task.columns.title.type",
        "missing required key",
    ),
    (
        "a primary key naming an undeclared column",
        ("primary_key: [task_id]", "primary_key: [task_id, taskid]  # <--"),
        "entities.task.primary_key[1]",
        "'taskid' is not a declared column",
    ),
    (
        "an empty primary key",
        ("primary_key: [task_id]", "primary_key: []  # <--"),
        "entities.task.primary_key",
        "name at least one column",
    ),
    (
        "a duration without a unit",
        ("window: {initial_from:", "window: {lookback: '5', initial_from:"),
        "entities.task.window.lookback",
        "'5' has no unit",
    ),
    (
        "a number for a duration",
        ("window: {initial_from:", "window: {lag: 30, initial_from:"),
        "entities.task.window.lag",
        "expected a duration such as 30s or 5m, found an integer (30)",
    ),
    (
        "a duration with a calendar unit",
        ("    window:", "    schedule: {every: 1mo}  # <--\n    window:"),
        "entities.task.schedule.every",
        "is a calendar step, not a duration",
    ),
    (
        "a zero window.max",
        ("window: {initial_from:", "window: {max: 0s, initial_from:"),
        "entities.task.window.max",
        "must be longer than 0s",
    ),
    (
        "an ambiguous month",
        (
            '    window: {initial_from: "2024-01-01 00:00:00"}',
            "    preload: {from: 2024-01-01, chunk: 1m}  # <--",
        ),
        "entities.task.preload.chunk",
        "ambiguous; write 1mo",
    ),
    (
        "an unknown time zone",
        ("entities:\n", "source:\n  timezone: Mars/Olympus  # <--\nentities:\n"),
        "source.timezone",
        "'Mars/Olympus' is not a known time zone",
    ),
    (
        "an unknown schedule time zone",
        (
            "    window:",
            "    schedule: {at: ['00:00'], timezone: Asia/Kolkatta}  # <--\n    window:",
        ),
        "entities.task.schedule.timezone",
        "is not a known time zone",
    ),
    (
        "a bad timestamp",
        ('{initial_from: "2024-01-01 00:00:00"}', '{initial_from: "2024-02-30 00:00:00"}  # <--'),
        "entities.task.window.initial_from",
        "is not a valid date and time",
    ),
    (
        "both api_key_file and api_key_env",
        ("entities:\n", "source:\n  api_key_file: key\n  api_key_env: KEY  # <--\nentities:\n"),
        "source.api_key_env",
        "give api_key_file or api_key_env, not both",
    ),
    (
        "no initial_from and no preload",
        [
            ("  task:\n", "  task:  # <--\n"),
            ('    window: {initial_from: "2024-01-01 00:00:00"}\n', ""),
        ],
        "entities.task.window.initial_from",
        "missing required key (needed when preload is not enabled)",
    ),
    (
        "a window without initial_from and no preload",
        ('{initial_from: "2024-01-01 00:00:00"}', "{lookback: 2m}  # <--"),
        "entities.task.window.initial_from",
        "missing required key",
    ),
    (
        "a disabled preload and no initial_from",
        [
            ("  task:\n", '  task:  # <--\n    preload: {from: "2024-01-01", enabled: false}\n'),
            ('    window: {initial_from: "2024-01-01 00:00:00"}\n', ""),
        ],
        "entities.task.window.initial_from",
        "missing required key",
    ),
    (
        "an enabled preload without from",
        ("    window:", "    preload: {chunk: 1w}  # <--\n    window:"),
        "entities.task.preload.from",
        "missing required key",
    ),
    (
        "a duplicate key",
        ("    table: task_details\n", "    table: task_details\n    table: other  # <--\n"),
        "entities.task.table",
        "duplicate key (first given on line 6)",
    ),
    (
        "a bad entity name",
        ("  task:\n", "  Task-1:  # <--\n"),
        "entities.Task-1",
        "is not an entity name",
    ),
    (
        "a table that is not a plain name",
        ("table: task_details", "table: task-details  # <--"),
        "entities.task.table",
        "'task-details' is not a plain name",
    ),
    (
        "one of syncd's own tables",
        ("table: task_details", "table: sync_state  # <--"),
        "entities.task.table",
        "is one of syncd's own tables",
    ),
    (
        "a text version column",
        ("    window:", "    version_column: title  # <--\n    window:"),
        "entities.task.version_column",
        "column 'title' is text; a version column must be timestamptz,",
    ),
    (
        "an undeclared version column",
        ("    window:", "    version_column: modified  # <--\n    window:"),
        "entities.task.version_column",
        "'modified' is not a declared column",
    ),
    (
        "both every and at",
        ("    window:", "    schedule: {every: 1m, at: ['00:00']}  # <--\n    window:"),
        "entities.task.schedule",
        "give exactly one of every and at",
    ),
    (
        "a time zone with every",
        ("    window:", "    schedule: {every: 1m, timezone: UTC}  # <--\n    window:"),
        "entities.task.schedule.timezone",
        "only goes with at",
    ),
    (
        "a bad time of day",
        ("    window:", "    schedule:\n      at: ['00:00', '24:00']  # <--\n    window:"),
        "entities.task.schedule.at[1]",
        "'24:00' is not a time of day",
    ),
    (
        "an ingest path without a slash",
        ("    window:", "    ingest_path: insert  # <--\n    window:"),
        "entities.task.ingest_path",
        "is not a URL path starting with /",
    ),
    (
        "a url that is not http",
        ("url: http://source.test/tasks", "url: ftp://source.test/tasks  # <--"),
        "entities.task.url",
        "expected an http:// or https:// URL",
    ),
    (
        "a listen without a port",
        ("entities:\n", "http: {listen: localhost}  # <--\nentities:\n"),
        "http.listen",
        "'localhost' is not host:port",
    ),
    (
        "a size in MB",
        ("entities:\n", "http:\n  max_body: 16MB  # <--\nentities:\n"),
        "http.max_body",
        "'16MB' is not a size",
    ),
    (
        "raw with keep_raw",
        (
            "      title: {field: Title, type: text}\n",
            "      raw: {type: jsonb}  # <--\n    keep_raw: true\n",
        ),
        "entities.task.columns.raw",
        "reserved for the whole record",
    ),
    (
        "a page size of 1",
        ("    window:", "    source: {page_size: 1}  # <--\n    window:"),
        "entities.task.source.page_size",
        "must be at least 2",
    ),
    (
        "clashing parameter names",
        ("entities:\n", "source:\n  params: {limit: offset}  # <--\nentities:\n"),
        "source.params.limit",
        "'offset' is also the name given to params.offset",
    ),
    (
        "zero attempts",
        ("entities:\n", "source:\n  retries: {attempts: 0}  # <--\nentities:\n"),
        "source.retries.attempts",
        "must be at least 1",
    ),
    (
        "max_backoff below backoff",
        ("entities:\n", "source:\n  retries: {backoff: 2s, max_backoff: 1s}  # <--\nentities:\n"),
        "source.retries.max_backoff",
        "must not be shorter than backoff",
    ),
    (
        "an empty part in records_path",
        ("entities:\n", "source:\n  records_path: data..items  # <--\nentities:\n"),
        "source.records_path",
        "is not a dotted path",
    ),
    (
        "no columns",
        ("    columns:\n", "    columns: {}  # <--\n    colums:\n"),
        "entities.task.columns",
        "declare at least one column",
    ),
]


@pytest.mark.parametrize(
    ("change", "key_path", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_problem_names_the_key_path_and_line(
    tmp_path: Path,
    change: tuple[str, str] | list[tuple[str, str]],
    key_path: str,
    message: str,
) -> None:
    changes = change if isinstance(change, list) else [change]
    text = MINIMAL
    for old, new in changes:
        assert old in text
        text = text.replace(old, new, 1)
    path = write(tmp_path, text)
    marked = "# <--" if "# <--" in text else changes[0][1].splitlines()[0]
    line = line_of(text, marked)
    assert_problem(problems(path), path, line, key_path, message)


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        database:
          dsn: postgresql://localhost/db
          colour: blue
        entities:
          task:
            url: http://source.test/tasks
            table: task_details
            primary_key: [id]
            columns:
              task_id: {field: TaskId, type: bigint}
              title: {type: txet}
            schedule: {every: 5}
    """)
    path = write(tmp_path, text)
    found = problems(path)
    expected = [
        (3, "database.colour", "unknown key"),
        (5, "entities.task.window.initial_from", "missing required key"),
        (8, "entities.task.primary_key[0]", "'id' is not a declared column"),
        (11, "entities.task.columns.title.type", "'txet' is not a type"),
        (12, "entities.task.schedule.every", "expected a duration"),
    ]
    for line, key_path, message in expected:
        assert_problem(found, path, line, key_path, message)
    assert len(found) == len(expected)
    assert [int(p.split(":")[1]) for p in found] == sorted(int(p.split(":")[1]) for p in found)
    with pytest.raises(ConfigError, match=r"\(and 4 more\)"):
        load_config(path, {})


def test_a_broken_section_is_reported_once_not_for_each_consequence(tmp_path: Path) -> None:
    text = MINIMAL.replace("    columns:\n", "    columns: 5\n    colums:\n")
    path = write(tmp_path, text)
    found = problems(path)
    # One problem for `columns`, one for the unknown `colums`; primary_key is not
    # reported as naming an undeclared column.
    assert [p.split(": ")[1] for p in found] == ["entities.task.columns", "entities.task.colums"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", 1, "the file is empty"),
        ("# only a comment\n", 1, "the file is empty"),
        ("- database\n- entities\n", 1, "expected a mapping, found a list"),
        ("database: {dsn: x}\nentities: [\n  task\n", 4, "invalid YAML"),
        ("database: {dsn: x}\nentities: {}\n", 2, "entities: declare at least one entity"),
        ("database: {dsn: x}\n", 1, "entities: missing required key"),
        ("database: {dsn: x}\nentities:\n", 2, "entities: a value is required"),
    ],
)
def test_file_level_problems(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text)
    found = problems(path)
    assert any(p.startswith(f"{path}:{line}: ") and message in p for p in found), found


def test_an_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    assert problems(path) == [f"{path}: cannot read the configuration: No such file or directory"]


def test_the_problem_line_uses_the_path_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, MINIMAL.replace("table: task_details", "table: 5"))
    monkeypatch.chdir(tmp_path)
    assert problems(Path("syncd.yaml"))[0].startswith("syncd.yaml:6: entities.task.table: ")


def test_two_entities_may_not_share_a_table_or_ingest_path(tmp_path: Path) -> None:
    entity = MINIMAL.split("entities:\n")[1].replace(
        "    window:", "    ingest_path: /in\n    window:"
    )
    text = "database: {dsn: x}\nentities:\n" + entity + entity.replace("  task:", "  other:")
    path = write(tmp_path, text)
    found = problems(path)
    assert_problem(found, path, 14, "entities.other.table", "already used by entity task")
    assert_problem(found, path, 19, "entities.other.ingest_path", "already used by entity task")


@pytest.mark.parametrize(
    "ingest_path",
    ["/metrics", "/healthz", "/readyz", "/status", "/v1/ingest/task", "/v1/sync/", "/v1/sync/x/y"],
)
def test_an_ingest_path_may_not_be_one_of_syncds_own(tmp_path: Path, ingest_path: str) -> None:
    text = MINIMAL.replace("    window:", f"    ingest_path: {ingest_path}\n    window:")
    path = write(tmp_path, text)
    line = line_of(text, "ingest_path:")
    message = f"{ingest_path!r} is one of syncd's own paths"
    assert_problem(problems(path), path, line, "entities.task.ingest_path", message)


@pytest.mark.parametrize("ingest_path", ["/v1/ingest", "/v1/syncing", "/metrics/task", "/in"])
def test_an_ingest_path_beside_syncds_own_is_accepted(tmp_path: Path, ingest_path: str) -> None:
    text = MINIMAL.replace("    window:", f"    ingest_path: {ingest_path}\n    window:")
    assert load_config(write(tmp_path, text), {}).entities["task"].ingest_path == ingest_path


def test_every_path_the_server_answers_counts_as_builtin() -> None:
    for path in http_paths.GET_PATHS:
        assert http_paths.is_builtin_path(path)
    for route in http_paths.ENTITY_ROUTES:
        assert route.endswith("/" + http_paths.ENTITY)
        assert http_paths.is_builtin_path(route.replace(http_paths.ENTITY, "task"))


# --- ${VAR} ----------------------------------------------------------------------------------


def test_variables_are_replaced_from_the_environment(tmp_path: Path) -> None:
    text = MINIMAL.replace("postgresql://localhost/db", '"host=${DB_HOST} password=$$x"').replace(
        "http://source.test/tasks", "${SOURCE}/tasks"
    )
    config = load_config(write(tmp_path, text), {"DB_HOST": "db.test", "SOURCE": "https://s.test"})
    assert config.database.dsn == "host=db.test password=$x"
    assert config.entities["task"].url == "https://s.test/tasks"


def test_variables_default_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCD_TEST_DSN", "postgresql://from-env/db")
    text = MINIMAL.replace("postgresql://localhost/db", "${SYNCD_TEST_DSN}")
    assert load_config(write(tmp_path, text)).database.dsn == "postgresql://from-env/db"


def test_an_undefined_variable_names_the_key_and_the_variable(tmp_path: Path) -> None:
    text = MINIMAL.replace("http://source.test/tasks", "${SOURCE_URL}/tasks")
    path = write(tmp_path, text)
    assert_problem(
        problems(path, {"OTHER": "x"}), path, 5, "entities.task.url", "SOURCE_URL is not set"
    )


def test_a_malformed_reference_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("postgresql://localhost/db", "pg://${DB-HOST}/db"))
    assert_problem(problems(path), path, 2, "database.dsn", "write $$ for a `$`")


# --- secrets ---------------------------------------------------------------------------------

SECRET_DB = MINIMAL.replace("  dsn:", "  password_file: db-password\n  dsn:")


def test_a_secret_file_is_looked_up_in_credentials_directory_first(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    write_secrets(credentials, {"db-password": "from-credentials\n"})
    write_secrets(tmp_path, {"db-password": "from-config-folder\n"})
    path = write(tmp_path, SECRET_DB)

    config = load_config(path, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert config.database.password == Secret("from-credentials")


def test_a_secret_file_falls_back_to_the_config_folder(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    write_secrets(tmp_path, {"db-password": "from-config-folder\n"})
    path = write(tmp_path, SECRET_DB)

    for environ in ({}, {"CREDENTIALS_DIRECTORY": str(credentials)}):
        assert load_config(path, environ).database.password == Secret("from-config-folder")


def test_an_absolute_secret_file_is_used_as_is(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_secrets(elsewhere, {"pw": "absolute\n"})
    path = write(
        tmp_path, MINIMAL.replace("  dsn:", f"  password_file: {elsewhere / 'pw'}\n  dsn:")
    )
    assert load_config(path, {}).database.password == Secret("absolute")


def test_a_missing_secret_file_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, SECRET_DB)
    found = problems(path, {"CREDENTIALS_DIRECTORY": str(tmp_path / "nowhere")})
    assert_problem(found, path, 2, "database.password_file", "db-password")
    assert_problem(found, path, 2, "database.password_file", "No such file or directory")
    assert_problem(found, path, 2, "database.password_file", "nor in $CREDENTIALS_DIRECTORY")


def test_secrets_never_appear_in_problems_or_reprs(tmp_path: Path) -> None:
    write_secrets(tmp_path)
    (tmp_path / "ingest-api-key").write_bytes(b"s3cret-bytes\xff\n")  # not UTF-8
    (tmp_path / "source-api-key").write_text("\n")  # empty
    text = FULL.replace("table: task_details", "table: 5")
    path = write(tmp_path, text)

    found = problems(path, {"SYNCD_SOURCE_API_KEY": "env-s3cret"})
    assert_problem(found, path, 8, "http.api_key_file", "not UTF-8 text")
    assert_problem(found, path, 13, "source.api_key_file", "is empty")
    assert "s3cret" not in "\n".join(found)

    write_secrets(tmp_path)
    text = FULL.replace("api_key_file: source-api-key", "api_key_env: SYNCD_SOURCE_API_KEY")
    config = load_config(write(tmp_path, text), {"SYNCD_SOURCE_API_KEY": "env-s3cret\n"})
    assert config.source.api_key == Secret("env-s3cret")
    assert "s3cret" not in repr(config) and "s3cret" not in str(config)


def test_an_unset_api_key_env_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "source: {api_key_env: SOURCE_KEY}\n")
    found = problems(path, {})
    assert_problem(found, path, 12, "source.api_key_env", "SOURCE_KEY is not set")


# --- parsers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("0s", timedelta(0)),
        (" 2m ", timedelta(minutes=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30", "has no unit"),
        ("0", "has no unit"),
        ("", "is not a duration"),
        ("m", "is not a duration"),
        ("5M", "is not a duration"),
        ("1mo", "calendar step"),
        ("1w", "calendar step"),
        ("-1s", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("5 m", "is not a duration"),
        ("1h30m", "is not a duration"),
        ("99999999999d", "longer than 3650d"),
        ("999999999d", "longer than 3650d"),
        ("3651d", "longer than 3650d"),
    ],
)
def test_parse_duration_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(1024, 1024), ("1024", 1024), ("512KiB", 512 * 1024), ("16MiB", 16 * 1024**2), (0, 0)],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["16MB", "16M", "16mib", "1.5MiB", "-1", "", "MiB", -1, True])
def test_parse_size_refuses(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1d", CalendarStep(1, "d")),
        ("2w", CalendarStep(2, "w")),
        ("1mo", CalendarStep(1, "mo")),
        ("3mo", CalendarStep(3, "mo")),
        ("1y", CalendarStep(1, "y")),
    ],
)
def test_parse_calendar_step(text: str, expected: CalendarStep) -> None:
    assert parse_calendar_step(text) == expected
    assert str(parse_calendar_step(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1m", "ambiguous; write 1mo"),
        ("0d", "at least 1"),
        ("mo", "not a calendar step"),
        ("1h", "not a calendar step"),
        ("1", "not a calendar step"),
        ("1M", "not a calendar step"),
    ],
)
def test_parse_calendar_step_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_calendar_step(text)


@pytest.mark.parametrize(
    ("text", "tz", "utc"),
    [
        ("2024-01-01 00:00:00", KOLKATA, datetime(2023, 12, 31, 18, 30)),
        ("2024-01-01T00:00:00", KOLKATA, datetime(2023, 12, 31, 18, 30)),
        ("2024-01-01", KOLKATA, datetime(2023, 12, 31, 18, 30)),
        ("2024-01-01 00:00", NEW_YORK, datetime(2024, 1, 1, 5)),
        ("2024-07-01 00:00:00", NEW_YORK, datetime(2024, 7, 1, 4)),  # EDT
        ("2024-01-01T00:00:00Z", KOLKATA, datetime(2024, 1, 1)),
        ("2024-01-01 05:30:00+05:30", NEW_YORK, datetime(2024, 1, 1)),
        ("2024-01-01T00:00:00-0400", KOLKATA, datetime(2024, 1, 1, 4)),
        ("2024-01-01 00:00:00.123456", ZoneInfo("UTC"), datetime(2024, 1, 1, 0, 0, 0, 123456)),
        ("2024-01-01T00:00:00.5Z", KOLKATA, datetime(2024, 1, 1, 0, 0, 0, 500000)),
        ("2024-01-01T00:00:00.123456789Z", KOLKATA, datetime(2024, 1, 1, 0, 0, 0, 123456)),
    ],
)
def test_parse_timestamp(text: str, tz: ZoneInfo, utc: datetime) -> None:
    parsed = parse_timestamp(text, tz)
    assert parsed.tzinfo is not None
    assert parsed == utc.replace(tzinfo=UTC)


def test_parse_timestamp_keeps_the_zone_of_a_naive_time() -> None:
    parsed = parse_timestamp("2024-01-01 00:00:00", KOLKATA)
    assert parsed.tzinfo == KOLKATA and parsed.utcoffset() == timedelta(hours=5, minutes=30)
    assert parse_timestamp("2024-01-01 00:00:00+01:00", KOLKATA).tzinfo == timezone(
        timedelta(hours=1)
    )


def test_parse_timestamp_in_a_dst_gap_moves_past_the_gap() -> None:
    # 2024-03-10 02:30 never happened in New York: clocks went from 02:00 EST to 03:00 EDT.
    parsed = parse_timestamp("2024-03-10 02:30:00", NEW_YORK)
    assert parsed == datetime(2024, 3, 10, 7, 30, tzinfo=UTC)
    assert (parsed.hour, parsed.minute, parsed.utcoffset()) == (3, 30, timedelta(hours=-4))


def test_parse_timestamp_of_a_repeated_hour_takes_the_first() -> None:
    # 2024-11-03 01:30 happened twice in New York (EDT, then EST): the earlier is meant.
    parsed = parse_timestamp("2024-11-03 01:30:00", NEW_YORK)
    # astimezone: PEP 495 makes an ambiguous time unequal to every time in another zone.
    assert parsed.astimezone(UTC) == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(hours=-4)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-1-1",
        "2024-01-01 0:00:00",
        "01/02/2024",
        "2024-02-30 00:00:00",
        "2024-01-01 24:00:00",
        "2024-01-01 00:00:00+25:00",
        "2024-01-01 00:00:00 UTC",
        "1704067200",
    ],
)
def test_parse_timestamp_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text, KOLKATA)


def test_default_config_path() -> None:
    assert default_config_path({}) == "/etc/syncd/syncd.yaml"
    assert default_config_path({"SYNCD_CONFIG": "/srv/syncd.yaml"}) == "/srv/syncd.yaml"
    assert default_config_path({"SYNCD_CONFIG": ""}) == "/etc/syncd/syncd.yaml"


def test_a_dsn_libpq_cannot_read_is_a_config_error_that_does_not_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text(
        'database:\n  dsn: "postgresql://u:s3cr%zzet@h/db"\n'
        "entities:\n  t:\n    url: http://x/y\n    table: t\n    primary_key: [id]\n"
        "    columns: {id: {type: bigint}}\n    window: {initial_from: '2024-01-01'}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.problems[0].startswith(f"{path}:2: database.dsn: not a libpq")
    assert "s3cr" not in str(caught.value.problems)
