"""Pulling records from sources. `incremental` (`Engine`) and `preload` (`Preloader`)
are the two kinds of pull run, composed (`parts`) from the same pieces: `locking`
(the entity's advisory lock), `recording` (its `sync_time` row and metrics) and
`span_writer` (reading one span page by page and committing each page). Below them:
`windows` and `chunks` plan `spans`; `paging` reads one window drift-safe through
`source` (with `retry` and `inflight` for deadlines); `jsonrecords` decodes a page;
`records` builds rows; `prefetch` reads ahead. `rewind` moves a watermark back;
`results` says how a run ended."""
