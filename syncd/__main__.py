"""`python -m syncd`: the command line, as the installed `syncd` script runs it."""

import sys

from syncd.cli.main import main

sys.exit(main())
