"""PostgreSQL. `connection` opens connections and says what their errors mean;
`schema` creates what is missing; `store` upserts an entity's rows (through
`copytext` for large batches); `runlog` keeps syncd's own tables (`sync_time`,
`sync_state`, `sync_rejects`); `locks` names and takes the advisory locks; `rows`
and `storable` are what is stored and how odd text is made storable."""
