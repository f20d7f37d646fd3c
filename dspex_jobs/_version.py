"""The version of dspex-jobs, in one place.

``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``, statically: building a wheel
never imports the package), ``dspex_jobs.__version__`` re-exports it and ``dspex-jobs
--version`` prints it. To release, change it here and add its section to ``CHANGELOG.md``
(see ``docs/release_checklist.md``).
"""

__version__ = "0.1.0"
