#!/usr/bin/env bash
# Container entry point on a charpack pod (`charpack pod up` sets it as the start command).
#
# 1. Brings the charpack checkout on the volume to $CHARPACK_REF: the version of the client that
#    created the pod (`charpack pod up` passes its commit, or the release tag v<version>), so the
#    node pack ComfyUI loads is exactly the client's. A checkout with local changes is kept as it
#    is, and so is one when the ref cannot be fetched; both are logged, and `charpack pod up`
#    and `charpack preflight` then report the version difference with the fix.
# 2. Hands over to start.py: provisioning (idempotent; a second run changes nothing), then
#    nginx with the token on the public port and ComfyUI on 127.0.0.1.
# Secrets arrive in the environment and are never echoed here. Notes also go to logs/start.log.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
root="${CHARPACK_ROOT:-/workspace}"

note() {
  echo "charpack start: $*"
  mkdir -p "$root/logs" 2>/dev/null && echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*" >> "$root/logs/start.log"
}

if [ -n "${CHARPACK_REF:-}" ] && [ -d "$repo/.git" ]; then
  head="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo none)"
  if [ "$head" = "$CHARPACK_REF" ]; then
    note "charpack already at $CHARPACK_REF"
  elif [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    note "$repo has local changes; keeping it at ${head:0:12} instead of $CHARPACK_REF"
  elif GIT_TERMINAL_PROMPT=0 git -C "$repo" fetch --quiet origin "$CHARPACK_REF" &&
       git -C "$repo" checkout --quiet --detach FETCH_HEAD; then
    note "charpack at $CHARPACK_REF ($(git -C "$repo" rev-parse HEAD))"
  else
    note "could not fetch $CHARPACK_REF from $(git -C "$repo" remote get-url origin 2>/dev/null) (a commit that was never pushed?); keeping ${head:0:12}"
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

exec python3 "$here/start.py" --provision --root "$root" "$@"
