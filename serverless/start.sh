#!/usr/bin/env bash
# The worker's start: ComfyUI on 127.0.0.1:8188 from /opt/venv (the interpreter everything was
# installed into), models from the network volume, then charpack's handler (runpod SDK).
set -uo pipefail
volume="${CHARPACK_VOLUME:-/runpod-volume}"
# A volume provisioned by `charpack pod up` holds ComfyUI/models/; worker-comfyui's convention is
# models/ at the volume's root. extra_model_paths.yaml lists both; the folders node code reads
# from ComfyUI's own models/ directly (InsightFace packs, YOLO detectors) are linked here.
models=""
for candidate in "${volume}/ComfyUI/models" "${volume}/models"; do
  if [ -d "${candidate}" ]; then models="${candidate}"; break; fi
done
if [ -z "${models}" ]; then
  echo "charpack worker: no models folder on the network volume (${volume}/ComfyUI/models or" \
       "${volume}/models): attach the volume charpack pod up provisioned to this endpoint" >&2
else
  echo "charpack worker: models from ${models}"
  for folder in insightface ultralytics; do
    if [ -d "${models}/${folder}" ]; then
      rm -rf "/comfyui/models/${folder}"
      ln -sfn "${models}/${folder}" "/comfyui/models/${folder}"
    fi
  done
fi
# shellcheck disable=SC2086 # CHARPACK_COMFY_ARGS is a list of flags
/opt/venv/bin/python -u /comfyui/main.py --listen 127.0.0.1 --port 8188 --disable-auto-launch \
  ${CHARPACK_COMFY_ARGS:-} &
exec /opt/venv/bin/python -u /opt/charpack/serverless/handler.py "$@"
