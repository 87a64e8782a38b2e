"""``charpack run``: a pack on one or many servers, resumable, every image exactly once.

- ``runner``: :func:`run_pack`, the library call; ``options``: its options, control, summary;
- ``loop``: the one thread that owns the pack's state; ``state``: the pack's record during a run;
- ``worker``: one server's side (its prompts); ``fetcher``: bringing its files into the folder;
- ``retry_rules``: how an attempt's end becomes the job's next step (the identity gate, what a
  new seed can fix); ``scheduler``: which job goes to which server; ``fleet``: the servers as
  the loop sees them; ``messages`` and ``events``: what moves between threads and to the user.
"""
