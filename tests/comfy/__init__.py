"""The test world: a cached real ComfyUI 0.3.75 CPU server, stand-in nodes and tiny models."""
