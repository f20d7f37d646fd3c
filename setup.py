"""The one thing pyproject.toml cannot say: the optional C helper for tables.

``dspex_jobs/protocol/_table_c.c`` is built when a C compiler and the Python headers are
present; ``optional=True`` lets the install go on without it (a warning, not an error), and
``dspex_jobs/protocol/_table.py`` then uses its pure-Python passes, which give the same
values, a little slower (docs/protocol.md, "The compiled helper").
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dspex_jobs.protocol._table_c",
            ["dspex_jobs/protocol/_table_c.c"],
            optional=True,
        )
    ]
)
