"""Loading the YAML configuration into the objects of `syncd.config.model` (the file's
format is in docs/configuration.md).

Every problem in the file is collected, not only the first, and reported as
`FILE:LINE: key.path: message` so that `check-config` can list them all at
once. No message ever contains a secret: values read from secret files or
secret environment variables are never echoed, and neither are DSNs or URLs
(which may embed credentials).

The reading is layered, each layer in its own module: the YAML tree
(`yaml_tree`), generic typed readers (`tree_reader`), syncd's kinds of value
(`value_readers`), the `source` section (`source_section`), the `entities`
section (`entity_section`); here, the file itself and the top-level sections.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from syncd.config.entity_section import EntitySection
from syncd.config.model import Config, Database, Http, SchedulerConfig, SourceConfig
from syncd.config.source_section import SourceSection
from syncd.config.value_readers import ValueReaders
from syncd.config.yaml_tree import Node, compose
from syncd.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/syncd/syncd.yaml"


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


_TOP_KEYS = ("database", "http", "source", "scheduler", "entities")
_DATABASE_KEYS = ("dsn", "password_file", "schema")
_HTTP_KEYS = ("listen", "api_key_file", "api_key_header", "max_body")


class _Loader(ValueReaders):
    """The whole syncd schema: the top-level sections here, `source` and `entities` by
    their own readers, all collecting problems in this one reader."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        super().__init__(file, environ)
        self.sources = SourceSection(self)
        self.entity_section = EntitySection(self, self.sources)

    def config(self, root: Node) -> Config | None:
        top = self.fields(root, "", _TOP_KEYS)
        if top is None:
            return None
        defaults = SourceConfig()
        source = top.opt("source", lambda n, p: self.sources.source(n, p, defaults), defaults)
        return Config(
            path=Path(self.file),
            database=top.req("database", self.database, Database(dsn="")),
            http=top.opt("http", self.http, Http()),
            source=source,
            scheduler=top.opt("scheduler", self.scheduler, SchedulerConfig()),
            entities=top.req(
                "entities", lambda n, p: self.entity_section.entities(n, p, source), {}
            ),
        )

    def database(self, node: Node, path: str) -> Database | None:
        fields = self.fields(node, path, _DATABASE_KEYS)
        if fields is None:
            return None
        return Database(
            dsn=fields.req("dsn", self.dsn, ""),
            password=fields.opt("password_file", self.secret_file, None),
            schema=fields.opt("schema", self.identifier, "public"),
        )

    def http(self, node: Node, path: str) -> Http | None:
        fields = self.fields(node, path, _HTTP_KEYS)
        if fields is None:
            return None
        default = Http()
        host, port = fields.opt("listen", self.listen, (default.host, default.port))
        return Http(
            host=host,
            port=port,
            api_key=fields.opt("api_key_file", self.secret_file, None),
            api_key_header=fields.opt("api_key_header", self.header_name, default.api_key_header),
            max_body=fields.opt("max_body", self.size, default.max_body),
        )

    def scheduler(self, node: Node, path: str) -> SchedulerConfig | None:
        fields = self.fields(node, path, ("max_concurrent",))
        if fields is None:
            return None
        default = SchedulerConfig().max_concurrent
        return SchedulerConfig(fields.opt("max_concurrent", self.integer(1), default))
