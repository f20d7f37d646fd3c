"""``python -m dspex_jobs.lmserver --host 127.0.0.1 --port 0 ...``: run the LM server."""

from __future__ import annotations

import sys

from dspex_jobs.lmserver.cli import main

if __name__ == "__main__":
    sys.exit(main())
