"""The ``charpack`` command line: short commands over the library.

- ``main``: the app and its commands; ``run``, ``pack``, ``pod``: the command groups;
- ``output``: the one console, error renderer and ``--json`` error shape; ``progress``: a run's
  live display or JSON lines.
"""
