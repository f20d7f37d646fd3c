"""A module-level app for the plain ``celery`` command, built from ``DSPEX_*`` settings.

``celery -A dspex_jobs.celery_app worker -Q general`` works like
``dspex-jobs worker --queue general`` (without the per-queue tuning of
:mod:`dspex_jobs.pools`, which the ``dspex-jobs`` command adds). This is the one module that
does work at import time, because that is how the ``celery`` command finds an app; the
library itself never imports it.
"""

from dspex_jobs.app import make_app
from dspex_jobs.settings import Settings
from dspex_jobs.worker import install_worker_hooks

app = make_app(Settings.from_env())
install_worker_hooks(app)
