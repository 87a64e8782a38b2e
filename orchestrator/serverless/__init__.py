"""RunPod Serverless: charpack's worker (the handler a Serverless worker runs beside its ComfyUI)
and the S3 object layout the worker writes and the orchestrator reads.

:mod:`.objects` owns the object keys and the S3 access (configured from the environment only);
:mod:`.worker` owns the handler. boto3 is the ``serverless`` extra, imported only when a store is
opened, so importing this package needs nothing beyond charpack's own dependencies.
"""
