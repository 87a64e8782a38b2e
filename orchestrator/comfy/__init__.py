"""The client of one ComfyUI server; it knows nothing of packs or runs.

- ``client``: :class:`ComfyClient`, every route charpack calls; ``transport``: HTTP, timeouts,
  retries and error mapping; ``auth``: where a server is, its credentials, redaction;
- ``stream`` and ``events``: the websocket and its typed events; ``completion``: knowing when a
  prompt is finished; ``results``: what the client returns; ``rejections``: readable messages
  for a refused workflow;
- ``uploader``: uploads; ``downloads``, ``limits``, ``landing``: bounded, proven downloads;
- ``objectinfo``: ``/object_info`` data.
"""
