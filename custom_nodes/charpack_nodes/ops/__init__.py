"""Helpers behind the nodes: paths, PNG encoding, the background writer, identity scoring and
widget-value parsing. They may import numpy, torch or InsightFace, never ComfyUI or the
orchestrator (the node modules pass ComfyUI's folders and flags in)."""
