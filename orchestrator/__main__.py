"""``python -m orchestrator`` is the ``charpack`` command."""

from orchestrator.cli import main

main()
