#!/usr/bin/env bash
# Install the Debian packages layerstore's tests and demo use, when missing:
# the real peers (podman 4.3.1, the containers-storage CLI, runc), uidmap for
# rootless stores, busybox-static to build test images without a registry and
# keyutils (keyctl) for the doctor's key-quota test; debootstrap for the
# Debian image of the run and gc tests and the benchmarks; fuse-overlayfs
# for gc's test with a frozen FUSE filesystem, procps (pgrep) and
# e2fsprogs (chattr) for the kill tests; systemd (systemd-analyze) to check
# the boot unit in contrib/
set -euo pipefail

packages=(podman containers-storage runc uidmap busybox-static keyutils debootstrap
          fuse-overlayfs procps e2fsprogs systemd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
