#!/usr/bin/env bash
# The main job on the default local store (podman's own, from storage.conf):
# install what is needed, build layerstore, import a small busybox image
# with layerstore if the store has no images, then show what layerstore and
# podman see, and use the image: create a container, mount it, look inside,
# unmount and remove it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --quiet -p layerstore-cli
ls=target/release/layerstore

if [ "$($ls images --json)" = "[]" ]; then
  echo "== the store has no images: layerstore import of a busybox rootfs" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
  cp /bin/busybox "$work/rootfs/bin/busybox"
  for applet in sh ls id stat cat true; do ln -s busybox "$work/rootfs/bin/$applet"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$work/rootfs/etc/passwd"
  printf 'root:x:0:\n' > "$work/rootfs/etc/group"
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  $ls import "$work/rootfs.tar" layerstore-demo
fi

echo "== layerstore info";              $ls info
echo; echo "== layerstore images";      $ls images
echo; echo "== layerstore layers";      $ls layers
echo; echo "== layerstore containers";  $ls containers
echo; echo "== podman images (the same store)"; podman images

image=$($ls images --json | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p' | head -n 1)
echo; echo "== a container on image ${image:0:12}: create, mount, look, unmount, remove"
ctr=$($ls create --name "layerstore-demo-$$" "$image")
dir=$($ls mount "$ctr")
echo "mounted at $dir:"; ls "$dir" | head -n 20
$ls umount "$ctr"
$ls rm "$ctr" >/dev/null
echo "removed container ${ctr:0:12}"
