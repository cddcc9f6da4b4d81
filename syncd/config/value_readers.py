"""Readers of single syncd settings out of the YAML tree: durations, sizes, timestamps,
connection strings, URLs, listen addresses, names and secrets.

They add the syncd-specific value types to the generic readers of TreeReader; the
section readers (source, entities, the top level) are built on top of them. Parsing
the text itself is `syncd.config.values`'s job, finding secrets `syncd.config.secrets`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import psycopg2
import psycopg2.extensions

from syncd.config.model import Secret
from syncd.config.secrets import read_env_secret, read_secret_file
from syncd.config.tree_reader import Reader, TreeReader
from syncd.config.values import parse_duration, parse_size, parse_timestamp
from syncd.config.yaml_tree import Node, Scalar

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # PostgreSQL cuts names at 63 bytes
IDENTIFIER_RULE = "a plain name (letters, digits and _, at most 63)"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_LISTEN = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]*)):(?P<port>[0-9]+)")


class ValueReaders(TreeReader):
    """TreeReader plus the readers of syncd's own kinds of value."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        super().__init__(file, environ)
        self.config_dir = Path(file).parent  # where relative secret files are found

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

    def identifier(self, node: Node, path: str) -> str | None:
        """A PostgreSQL name written without quotes: a schema, a table."""
        return self.matching(IDENTIFIER, IDENTIFIER_RULE)(node, path)

    def header_name(self, node: Node, path: str) -> str | None:
        """An HTTP header name (a token, RFC 9110), for the API key headers."""
        return self.matching(_HEADER_NAME, "a header name")(node, path)

    def secret_file(self, node: Node, path: str) -> Secret | None:
        """The content of the file named (see `syncd.config.secrets` for where it is
        looked up); problems name the file and the reason, never its content."""
        read = self.parsed(lambda name: read_secret_file(name, self.config_dir, self.environ))
        return read(node, path)

    def env_secret(self, node: Node, path: str) -> Secret | None:
        """The value of the environment variable named."""
        env_name = self.matching(_ENV_NAME, "an environment variable name")
        read = self.parsed(lambda name: read_env_secret(name, self.environ), env_name)
        return read(node, path)


def _is_http_url(text: str) -> bool:
    if any(c.isspace() for c in text):
        return False
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port over 65535)
    except ValueError:  # e.g. a malformed IPv6 host
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
