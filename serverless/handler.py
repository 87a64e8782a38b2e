"""The Serverless worker's entry point: ``python handler.py`` beside the worker's ComfyUI.

It hands charpack's handler (:func:`charpack.serverless.worker.handle`) to the runpod SDK, which
takes jobs from the platform, or, with ``--rp_serve_api --rp_api_host H --rp_api_port P``, serves
the SDK's local test API (``/run``, ``/runsync``, ``/status``) for tests. Configuration is the
environment: ``CHARPACK_COMFY_URL`` (default ``http://127.0.0.1:8188``), ``CHARPACK_S3_*`` and
boto3's ``AWS_*`` (see ``serverless/README.md``).
"""

from __future__ import annotations

import logging
import os

import runpod
from charpack.comfy.auth import install_log_redaction
from charpack.serverless.worker import handle


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("CHARPACK_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()
    runpod.serverless.start({"handler": handle})


if __name__ == "__main__":
    main()
