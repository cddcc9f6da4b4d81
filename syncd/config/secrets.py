"""Secrets named in the configuration: files (looked up in systemd's
`$CREDENTIALS_DIRECTORY` first, then beside the configuration file) and environment
variables.

What cannot be read is refused with SecretUnavailable, whose message names the file or
the variable and the reason, never anything read from it (not even UnicodeDecodeError's
text, which quotes a byte): it is shown to the operator and may end up in logs. See
"Secrets" in docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from syncd.config.model import Secret


class SecretUnavailable(ValueError):
    """A secret that is missing, unreadable or empty; the message is safe to show."""


def read_secret_file(name: str, config_dir: Path, environ: Mapping[str, str]) -> Secret:
    """The stripped content of the file `name`, which must be UTF-8 and not empty."""
    location = secret_location(name, config_dir, environ)
    try:
        value = location.read_bytes().decode("utf-8").strip()
    except FileNotFoundError as exc:
        reason = f"{exc.strerror}{_credentials_note(name, environ)}"
    except OSError as exc:
        reason = exc.strerror or "unreadable"
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    else:
        if value:
            return Secret(value)
        reason = "the file is empty"
    raise SecretUnavailable(f"cannot read secret file {str(location)!r}: {reason}")


def secret_location(name: str, config_dir: Path, environ: Mapping[str, str]) -> Path:
    """systemd's `LoadCredential=` puts files in $CREDENTIALS_DIRECTORY, which
    is searched first; then the folder of the config file."""
    relative = Path(name)
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials and not relative.is_absolute():
        candidate = Path(credentials) / relative
        try:
            found = candidate.exists()
        except OSError:  # e.g. a folder we may not search: reading it will say why
            found = True
        if found:
            return candidate
    return config_dir / relative  # an absolute `relative` replaces config_dir


def _credentials_note(name: str, environ: Mapping[str, str]) -> str:
    """For a missing file: say that $CREDENTIALS_DIRECTORY was searched too."""
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials and not Path(name).is_absolute():
        return f" (nor in $CREDENTIALS_DIRECTORY, {credentials})"
    return ""


def read_env_secret(name: str, environ: Mapping[str, str]) -> Secret:
    """The stripped value of the environment variable `name`, which must not be empty."""
    value = environ.get(name, "").strip()
    if not value:
        raise SecretUnavailable(f"environment variable {name} is not set or empty")
    return Secret(value)
