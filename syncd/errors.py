"""Exceptions that reach a person: each carries one readable line and an exit status."""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2


class SyncdError(Exception):
    """An error meant for the operator: `str(err)` is one line naming what is wrong."""

    exit_status = EXIT_RUN_FAILED


class UsageError(SyncdError):
    exit_status = EXIT_USAGE


class ConfigError(SyncdError):
    """The configuration is invalid. `problems` holds one line per problem,
    already formatted as `FILE:LINE: key.path: message`."""

    exit_status = EXIT_USAGE

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        first = self.problems[0] if self.problems else "invalid configuration"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(first + more)


class SourceError(SyncdError):
    """The upstream source could not be read (after retries, where retrying made sense)."""


class SourceStopped(SourceError):
    """The request was given up because syncd is stopping: the run ends early, not
    because the source failed."""


class SourceAuthError(SourceError):
    """401/403 from the source: the API key is wrong. Never retried."""


class PagingError(SourceError):
    """A window kept shifting under us and could not be read consistently."""


class LockBusy(SyncdError):
    """A run still holds the entity's lock after waiting for it as long as allowed
    (`syncd rewind --wait`): try again later."""
