"""The one HTTP port. `server` listens and holds the connections under limits and
deadlines; `request` and `body` read a request; `routes` matches it and checks the
API key; `endpoints` answers; `responses` makes the bytes; `workers` and `ratelimit`
bound the blocking calls and the warnings. It knows syncd only through the `App`
protocol (`app`), which `syncd.service` implements."""
