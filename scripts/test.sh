#!/usr/bin/env bash
# Run every test of the workspace, installing what the tests need first.
#
# Privileged tests (root, mounts, real podman stores) are marked ignored in
# the code with their reason. They run here when we are root or when
# LAYERSTORE_REQUIRE_PRIVILEGED=1 (CI); a privileged test that then cannot
# run fails instead of passing.
set -euo pipefail
cd "$(dirname "$0")/.."

privileged=0
if [ "$(id -u)" -eq 0 ] || [ "${LAYERSTORE_REQUIRE_PRIVILEGED:-}" = 1 ]; then
  privileged=1
  scripts/install-deps.sh
fi

if cargo nextest --version >/dev/null 2>&1; then
  # nextest runs each test in its own process: POSIX locks belong to a
  # process, so lock tests must not share one.
  args=(--workspace --no-fail-fast)
  [ "$privileged" = 1 ] && args+=(--run-ignored all)
  cargo test --workspace --doc --quiet
  # Rootless podman tests run on their own, after the rest: a rootless
  # podman's pause process keeps a mount namespace holding a copy of every
  # mount the host had when it started, so while it lives, root podman
  # cannot remove the directories under its containers' mounts (shm: EBUSY).
  rootless='kind(test) & test(/rootless/)'
  status=0
  cargo nextest run "${args[@]}" -E "not ($rootless)" || status=$?
  # Last, so that its summary line closes the output.
  cargo nextest run "${args[@]}" -E "$rootless" || status=$?
  exit "$status"
else
  args=(--test-threads=1)
  [ "$privileged" = 1 ] && args+=(--include-ignored)
  cargo test --workspace --no-fail-fast -- "${args[@]}"
fi
