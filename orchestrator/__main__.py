"""``python -m charpack`` is the ``charpack`` command."""

from .cli.main import main

main()
