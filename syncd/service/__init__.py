"""`syncd run`, the daemon. `daemon` is the loop (events from `events`, schedules
from `scheduler` and `triggers`); `startup` waits for the database before READY=1;
`reload` applies a new file on SIGHUP; `preloads` runs backfills in their own thread;
`app` is what the HTTP port asks (with `ingest_routes` for pushes); `database`,
`status` and `summary` are the service's queries and reports; `systemd` speaks
sd_notify; `state` and `context` are what the parts share."""
