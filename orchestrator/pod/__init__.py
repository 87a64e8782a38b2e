"""RunPod pods running ComfyUI behind charpack's auth proxy.

- ``lifecycle``: up, status, down; ``api``: the RunPod SDK, thinly typed; ``health``: waiting
  for a pod's ComfyUI; ``spec``: a pod's settings from the pod manifest; ``version``: which
  charpack this is and whether a server's nodes match it.
"""
