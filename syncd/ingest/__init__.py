"""Push ingest, the domain side: `ingestor` stores pushed records (one transaction, one
`sync_time` run each), `pool` holds its database connections, `body` reads a pushed
body, `errors` says why a push was not stored. Nothing here knows HTTP:
`syncd.service.ingest_routes` serves it."""
