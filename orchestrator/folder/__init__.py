"""The pack folder: what a run leaves, and the tools that read it.

- ``manifest``: ``manifest.json``; ``integrity``: one run at a time, no links followed, atomic
  writes; ``disk``: a full disk named, with how much to free;
- ``report``, ``publish``, ``contact_sheet``: ``charpack report | publish | contact-sheet``.
"""
