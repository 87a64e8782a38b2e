"""Checks before any GPU time: what a pack would send, and whether a server can run it.

- ``validate``: graphs against ``/object_info``; ``preflight``: a live server's nodes, models and
  ranges; ``plan``: the exact payloads on disk; ``findings``: the :class:`Finding` they report;
- ``workflows``: the generated ``workflows/api/*.json``.
"""
