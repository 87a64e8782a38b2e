"""The pack file and what it expands to, before anything is sent.

- ``packfile``: loading and checking a pack file, errors naming file, field and fix;
- ``packyaml``: reading its YAML in bounded time and memory; ``model``: the validated ``Pack``;
- ``settings``: the job settings of ``defaults`` and ``overrides``;
- ``jobs``: (scene, seed) jobs, their derived seeds, prompt ids and file stems;
- ``uploads``: the pictures a pack uploads and their content-derived names.
"""
