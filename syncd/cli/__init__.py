"""The `syncd` command: `main` parses the arguments and runs a command (`run` hands
over to `syncd.service`), `preload` runs `syncd preload` with its progress bar
(`progress`), `common` holds what several commands share."""
