"""syncd: keeps PostgreSQL tables in step with HTTP JSON APIs.

The package is layered; a module imports only from its own layer or those under it
(tests/test_packaging.py checks it), top to bottom:

    cli       the `syncd` command
    service   `syncd run`: the loop, schedules, systemd, what the HTTP port serves
    http      the HTTP port            ingest   pushed records
    sync      pulling from sources: windows, pages, records, runs
    db        PostgreSQL: connections, tables, upserts, the run log, locks
    config    the YAML file, as typed immutable objects
    columns   the column types: names, converters, COPY text
    (root)    errors, runs (kinds, statuses), metrics, logs: used by every layer

docs/architecture.md walks through it: the data path, the threads, the commit
protocol and the words the code uses.
"""

__version__ = "0.1.0"
