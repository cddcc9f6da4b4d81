"""Reading the `source` section: the top-level defaults for every entity, and an
entity's own `source`, which overrides them key by key (see "`source`" in
docs/configuration.md). Its `params` and `retries` mappings are read here too.
"""

from __future__ import annotations

from syncd.config.model import Params, Retries, SourceConfig
from syncd.config.value_readers import ValueReaders
from syncd.config.values import parse_time_format, parse_zone
from syncd.config.yaml_tree import Node

MAX_PAGE_SIZE = 100_000  # records per request
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


class SourceSection:
    """Reads the `source` section, with the value readers it is given (which collect
    the problems)."""

    def __init__(self, read: ValueReaders) -> None:
        self.read = read

    def source(self, node: Node, path: str, base: SourceConfig) -> SourceConfig | None:
        """The keys given here on top of `base`: the built-in defaults for the
        top-level `source`, the top-level result for an entity's `source`."""
        fields = self.read.fields(node, path, _SOURCE_KEYS)
        if fields is None:
            return None
        api_key = base.api_key
        if "api_key_file" in fields and "api_key_env" in fields:
            line = fields.entries["api_key_env"].line
            message = "give api_key_file or api_key_env, not both"
            self.read.problem(line, fields.key_path("api_key_env"), message)
        else:
            api_key = fields.opt("api_key_file", self.read.secret_file, api_key)
            api_key = fields.opt("api_key_env", self.read.env_secret, api_key)
        page_size = self.read.integer(
            2, " (consecutive pages overlap by one record)", MAX_PAGE_SIZE
        )
        return SourceConfig(
            api_key=api_key,
            api_key_header=fields.opt("api_key_header", self.read.header_name, base.api_key_header),
            timeout=fields.opt("timeout", self.read.duration(positive=True), base.timeout),
            page_size=fields.opt("page_size", page_size, base.page_size),
            params=fields.opt("params", lambda n, p: self.params(n, p, base.params), base.params),
            time_format=fields.opt(
                "time_format", self.read.parsed(parse_time_format), base.time_format
            ),
            timezone=fields.opt("timezone", self.read.parsed(parse_zone), base.timezone),
            records_path=fields.opt(
                "records_path",
                lambda n, p: self.read.dotted(n, p, allow_empty=True),
                base.records_path,
            ),
            retries=fields.opt(
                "retries", lambda n, p: self.retries(n, p, base.retries), base.retries
            ),
            max_page_bytes=fields.opt("max_page_bytes", self.read.page_bytes, base.max_page_bytes),
        )

    def params(self, node: Node, path: str, base: Params) -> Params | None:
        """The names of the source's query parameters, on top of `base`."""
        fields = self.read.fields(node, path, ("from", "to", "limit", "offset"))
        if fields is None:
            return None
        names = {
            "from": fields.opt("from", self.read.text, base.from_),
            "to": fields.opt("to", self.read.text, base.to),
            "limit": fields.opt("limit", self.read.text, base.limit),
            "offset": fields.opt("offset", self.read.text, base.offset),
        }
        # Only keys set here are checked, so that a clash inherited from the
        # top level is not reported again for every entity.
        for key in fields.entries:
            clash = [other for other in names if other != key and names[other] == names[key]]
            if clash:
                message = f"{names[key]!r} is also the name given to params.{clash[0]}"
                self.read.problem(fields.entries[key].line, fields.key_path(key), message)
        return Params(
            from_=names["from"], to=names["to"], limit=names["limit"], offset=names["offset"]
        )

    def retries(self, node: Node, path: str, base: Retries) -> Retries | None:
        """How often and how patiently a failed request is retried, on top of `base`."""
        fields = self.read.fields(node, path, ("attempts", "backoff", "max_backoff"))
        if fields is None:
            return None
        retries = Retries(
            attempts=fields.opt("attempts", self.read.integer(1), base.attempts),
            backoff=fields.opt("backoff", self.read.duration(), base.backoff),
            max_backoff=fields.opt("max_backoff", self.read.duration(), base.max_backoff),
        )
        touched = fields.get("max_backoff") or fields.get("backoff")
        if touched is not None and retries.max_backoff < retries.backoff:
            message = "must not be shorter than backoff"
            self.read.problem(touched.line, fields.key_path("max_backoff"), message)
        return retries
