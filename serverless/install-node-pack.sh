#!/usr/bin/env bash
# Used by serverless/Dockerfile: clone one node pack at a commit into /comfyui/custom_nodes and,
# when asked, install its requirements into /opt/venv (the interpreter ComfyUI runs with) with
# the manifest's excluded names dropped and the image's constraints applied.
#   charpack-install-node-pack NAME REPO COMMIT requirements|no-requirements
set -euo pipefail
name="$1" repo="$2" commit="$3" requirements="$4"
dest="/comfyui/custom_nodes/${name}"
git clone --filter=blob:none "${repo}" "${dest}"
git -C "${dest}" checkout --detach "${commit}"
test "$(git -C "${dest}" rev-parse HEAD)" = "${commit}"
if [ "${requirements}" = "requirements" ]; then
  filtered="$(mktemp)"
  # EXCLUDE comes from the Dockerfile's ARG (the manifest's [python].exclude).
  pattern="$(printf '%s|' ${EXCLUDE} | sed 's/|$//; s/[-_.]/[-_.]/g')"
  grep -viE "^[[:space:]]*(${pattern})[[:space:]]*([<>=!~;[]|$)" "${dest}/requirements.txt" > "${filtered}" || true
  /opt/venv/bin/python -m pip install -c /opt/charpack-constraints.txt -r "${filtered}"
fi
