#!/usr/bin/env bash
# Container entry point on a charpack pod (`charpack pod up` sets it as the start command).
#
# 1. Brings the charpack checkout on the volume to $CHARPACK_REF (when set and the checkout has
#    no local changes), so the node pack matches the orchestrator that created the pod.
# 2. Hands over to start.py: provisioning (idempotent; a second run changes nothing), then
#    nginx with the token on the public port and ComfyUI on 127.0.0.1.
# Secrets arrive in the environment and are never echoed here.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"

if [ -n "${CHARPACK_REF:-}" ] && [ -d "$repo/.git" ]; then
  if ! git -C "$repo" diff --quiet; then
    echo "charpack start: $repo has local changes; keeping it at $(git -C "$repo" rev-parse --short HEAD)"
  elif git -C "$repo" fetch --quiet origin "$CHARPACK_REF"; then
    git -C "$repo" checkout --quiet --detach FETCH_HEAD
    echo "charpack start: charpack at $CHARPACK_REF ($(git -C "$repo" rev-parse --short HEAD))"
  else
    echo "charpack start: could not fetch $CHARPACK_REF; keeping the checkout as it is"
  fi
fi

# SSH for debugging, as RunPod's own images do: RunPod puts the account's SSH key in
# PUBLIC_KEY; key-only logins on the pod's 22/tcp port. Skipped when there is no key or sshd.
if [ -n "${PUBLIC_KEY:-}" ] && command -v sshd >/dev/null 2>&1; then
  mkdir -p ~/.ssh && chmod 700 ~/.ssh
  grep -qxF "$PUBLIC_KEY" ~/.ssh/authorized_keys 2>/dev/null || echo "$PUBLIC_KEY" >> ~/.ssh/authorized_keys
  chmod 600 ~/.ssh/authorized_keys
  ssh-keygen -A >/dev/null 2>&1
  service ssh start >/dev/null 2>&1 || "$(command -v sshd)" -o PasswordAuthentication=no
fi

exec python3 "$here/start.py" --provision --root "${CHARPACK_ROOT:-/workspace}" "$@"
