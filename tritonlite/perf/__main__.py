"""`python -m tritonlite.perf ...` runs `tritonlite perf ...`."""

import sys

from tritonlite.perf.command import main

sys.exit(main())
