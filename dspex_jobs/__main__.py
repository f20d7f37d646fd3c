"""``python -m dspex_jobs`` is ``dspex-jobs``."""

from dspex_jobs.cli import main

main()
