"""The plumbing that the ``theory`` and ``empirical`` packages and the figures share, and nothing of the science:
``dimcollapse.io`` (strict JSON, atomic writes, one-line errors and exit codes, size checks). numpy only."""
