"""syncd: keeps PostgreSQL tables in step with HTTP JSON APIs."""

__version__ = "0.1.0"
