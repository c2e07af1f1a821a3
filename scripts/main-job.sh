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

# `layerstore run` hands the container to podman. Where podman's defaults
# cannot run a container on this machine (no CAP_SYS_RESOURCE for its nofile
# limit, PID 1 not systemd), give it a configuration for this job alone,
# leaving the host's untouched: limits below the caller's, cgroupfs, file
# events and logs. An exported CONTAINERS_CONF is used as it is.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  conf=$(mktemp --suffix=.conf)
  {
    echo '[containers]'
    echo 'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]'
    echo 'log_driver = "k8s-file"'
    echo '[engine]'
    echo 'cgroup_manager = "cgroupfs"'
    echo 'events_logger = "file"'
  } > "$conf"
  export CONTAINERS_CONF=$conf
  trap 'rm -f "$conf"' EXIT
fi

if ! $ls images --json | grep -q '"localhost/layerstore-demo:latest"'; then
  echo "== layerstore import of a small busybox image as localhost/layerstore-demo" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"; rm -f "${conf:-}"' EXIT
  mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
  cp /bin/busybox "$work/rootfs/bin/busybox"
  for applet in sh ls id stat cat true echo; do ln -s busybox "$work/rootfs/bin/$applet"; done
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

image=localhost/layerstore-demo
echo; echo "== a container on image $image: create, mount, look, unmount, remove"
ctr=$($ls create --name "layerstore-demo-$$" "$image")
dir=$($ls mount "$ctr")
echo "mounted at $dir:"; ls "$dir" | head -n 20
$ls umount "$ctr"
$ls rm "$ctr" >/dev/null
echo "removed container ${ctr:0:12}"

layers() { $ls layers --json | grep -o '"id":' | wc -l; }
before=$(layers)
echo; echo "== layerstore run with a new non-contiguous user-namespace mapping"
echo "   (podman 4.3.1 would copy the image for it and keep the copy; layerstore idmaps"
echo "   the image's own layer, or with --nocache uses it as it is on disk, and podman"
echo "   runs the container on it: podman run --rootfs, every podman flag applies)"
base=$(( (RANDOM % 1000 + 1000) * 65536 * 2 ))
set -x
$ls run --rm --uidmap 0:$base:65536 --uidmap 70000:$((base + 70000)):1 --gidmap 0:$base:65537 \
  --user 70000:0 "$image" sh -c 'echo "inside: uid $(id -u), /etc/passwd owned by $(stat -c %u:%g /etc/passwd)"'
set +x
echo "layers before: $before, after: $(layers)"

echo; echo "== layerstore gc --dry-run (what the cron job would reclaim; nothing is changed)"
$ls gc --dry-run --size

echo; echo "== layerstore doctor (exit 0 all ok, 1 warnings, 2 failures)"
status=0; $ls doctor || status=$?
echo "doctor exited $status"
