#!/bin/bash
# make-podman-store.sh G R
#
# Build a small but realistic private containers/storage store (overlay
# driver) with podman 4.3.1, only from local files (no registry access):
#
#   images
#     localhost/base:latest (+ extra tag localhost/base:v1)
#         one layer, imported from a busybox rootfs tar built here
#     localhost/layered:latest
#         FROM localhost/base + two RUN steps (adds files, deletes a file,
#         replaces a directory) => 3 layers
#   containers (all created with --pull=never)
#     plain           localhost/base      no ID mapping
#     contig          localhost/base      --uidmap/--gidmap 0:100000:65536
#     noncontig       localhost/base      uid 0:200000:1000,1000:1000:1,1001:201001:64535
#                                          gid 0:200000:65536
#     layered-mapped  localhost/layered   --uidmap/--gidmap 0:300000:65536
#   All four containers are run once to completion (proves the store works).
#   "plain" is left MOUNTED (podman mount) so that
#   R/overlay-layers/mountpoints.json has an entry.
#
# Before the store's first use the script creates R/overlay/idmapped-lower-dir-false,
# which makes c/storage v1.43 believe the kernel cannot idmap overlay lower
# layers: every container with a non-host mapping then gets an ID-mapped
# *template copy* of its image's top layer (layers.json record with
# uidmap/gidmap, listed in the image's "mapped-layers"), exactly as on old
# kernels. (Without it, podman 4.3.1 copies only for non-contiguous maps and
# then fails to mount that container, see /work/shared/environment.md.)
#
# Clean up with:  testdata/cleanup-store.sh G R
# (it runs `podman umount -a`, `containers-storage ... shutdown`, unmounts
# leftovers and removes G and R).
#
# To use the store by hand:
#   export CONTAINERS_CONF=<this dir>/containers.conf
#   podman --root G --runroot R --storage-driver overlay --tmpdir R/libpod-tmp ...
#   containers-storage -g G -R R -s overlay ...
#
# Determinism: the rootfs tar is byte-reproducible (fixed owners, modes,
# mtimes, sorted names), so the base layer ID (= its diff digest) is stable,
# and `podman build --timestamp` makes the layered image's layers and config
# stable too. Not reproducible: the base image ID (podman import stores the
# current time in the image config), mapped-layer and container-layer IDs
# (random), container IDs, "created" times and the lock-file tokens.

set -euo pipefail

# Fixed timestamp used for every file in the rootfs and for `podman build`.
readonly EPOCH=1700000000   # 2023-11-14T22:13:20Z

usage() { echo "usage: $0 GRAPHROOT RUNROOT" >&2; exit 2; }
die() { echo "$0: $*" >&2; exit 1; }
log() { printf '\n=== %s\n' "$*" >&2; }

[ $# -eq 2 ] || usage
[ "$(id -u)" -eq 0 ] || die "must run as root"
for tool in podman containers-storage runc busybox tar; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y podman containers-storage runc uidmap busybox-static)"
done

G=$(realpath -m -- "$1")
R=$(realpath -m -- "$2")
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

# --- safety: never touch a real store, never reuse a store ------------------
case "$G" in
    / | /var/lib/containers | /var/lib/containers/*) die "refusing graphroot $G" ;;
esac
case "$R" in
    / | /run | /run/containers | /run/containers/* | /var/run/containers*) die "refusing runroot $R" ;;
esac
[ "$G" != "$R" ] || die "graphroot and runroot must differ"
if [ -e "$G" ] && [ -n "$(ls -A -- "$G")" ]; then
    die "graphroot $G exists and is not empty; remove it first (cleanup-store.sh)"
fi
if [ -e "$R" ] && [ -n "$(ls -A -- "$R")" ]; then
    die "runroot $R exists and is not empty; remove it first (cleanup-store.sh)"
fi

export CONTAINERS_CONF="$SCRIPT_DIR/containers.conf"
[ -f "$CONTAINERS_CONF" ] || die "missing $CONTAINERS_CONF"

# Every podman call goes to the private store. --tmpdir keeps podman's
# runtime state (alive file, events, exit files, file locks) per store
# instead of the shared /run/libpod.
pod() {
    podman --root "$G" --runroot "$R" --storage-driver overlay \
        --tmpdir "$R/libpod-tmp" "$@"
}
cs() { containers-storage -g "$G" -R "$R" -s overlay "$@"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/make-podman-store.XXXXXX")
trap 'rm -rf -- "$WORK"' EXIT
trap 'echo "$0: FAILED at line $LINENO; clean up with: $SCRIPT_DIR/cleanup-store.sh $G $R" >&2' ERR

# --- 1. force the template-copy path before the store's first use ----------
log "creating $R/overlay/idmapped-lower-dir-false"
mkdir -p "$G" "$R/overlay"
touch "$R/overlay/idmapped-lower-dir-false"

# --- 2. a small busybox rootfs with fixed owners, modes and mtimes ---------
log "building rootfs in $WORK/rootfs"
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS"/{bin,etc,root,tmp,home/user,usr/bin,usr/share/fixtures/empty-dir,usr/share/fixtures/replaced-dir,var}
cp /bin/busybox "$ROOTFS/bin/busybox"
for applet in sh ls id stat cat true echo touch rm mkdir ln chmod chown find env sleep; do
    ln -s busybox "$ROOTFS/bin/$applet"
done

cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
user:x:1000:
nogroup:x:65534:
EOF
echo 'layerstore-fixture' >"$ROOTFS/etc/hostname"

# Files owned by the ordinary user (uid/gid 1000: mapped 1:1 by "noncontig").
echo 'hello from user 1000' >"$ROOTFS/home/user/hello.txt"
chown -R 1000:1000 "$ROOTFS/home/user"

# A setuid-root and a setgid file (chown-by-maps must keep these bits).
printf '#!/bin/sh\nid\n' >"$ROOTFS/usr/bin/suid-root"
chmod 4755 "$ROOTFS/usr/bin/suid-root"
printf '#!/bin/sh\nid\n' >"$ROOTFS/usr/bin/sgid-user"
chown 0:1000 "$ROOTFS/usr/bin/sgid-user"
chmod 2755 "$ROOTFS/usr/bin/sgid-user"

# A hard-link pair, a symlink, non-ASCII file names (valid UTF-8 and raw
# Latin-1 bytes that are not valid UTF-8), a directory that the layered image
# replaces (=> opaque dir) and one it deletes (=> whiteout).
FIX=$ROOTFS/usr/share/fixtures
echo 'same inode' >"$FIX/hardlink-a"
ln "$FIX/hardlink-a" "$FIX/hardlink-b"
ln -s hardlink-a "$FIX/symlink-to-a"
echo 'utf-8 name' >"$FIX/café.txt"
echo 'latin-1 name' >"$FIX/$(printf 'caf\351-latin1.txt')"
echo 'will be replaced' >"$FIX/replaced-dir/old.txt"
echo 'will be deleted' >"$FIX/deleted.txt"

chmod 0700 "$ROOTFS/root"
chmod 1777 "$ROOTFS/tmp"

# Fixed mtimes everywhere (-h: the symlinks themselves).
find "$ROOTFS" -exec touch -h -d "@$EPOCH" {} +

# Reproducible tar: sorted names, numeric owners, GNU format (no pax
# atime/ctime records), fixed mtime.
tar --sort=name --format=gnu --numeric-owner --mtime="@$EPOCH" \
    -C "$ROOTFS" -cf "$WORK/base-rootfs.tar" .
echo "rootfs tar sha256: $(sha256sum "$WORK/base-rootfs.tar" | cut -d' ' -f1)" >&2

# --- 3. images ---------------------------------------------------------------
log "podman import -> localhost/base:latest"
pod import --quiet --change 'CMD ["/bin/sh"]' "$WORK/base-rootfs.tar" localhost/base:latest

log "podman build -> localhost/layered:latest"
mkdir -p "$WORK/ctx"
cat >"$WORK/ctx/Containerfile" <<'EOF'
FROM localhost/base:latest
LABEL org.example.fixture=layered
# layer 2: add files
RUN echo layered > /etc/layered.txt && mkdir -p /opt/app && echo one > /opt/app/one.txt
# layer 3: delete a file (whiteout), replace a directory (opaque dir), add a file
RUN rm /usr/share/fixtures/deleted.txt \
 && rm -rf /usr/share/fixtures/replaced-dir && mkdir /usr/share/fixtures/replaced-dir \
 && echo new > /usr/share/fixtures/replaced-dir/new.txt \
 && echo two > /opt/app/two.txt
CMD ["/bin/cat", "/etc/layered.txt"]
EOF
# --isolation oci (runc) works with the private containers.conf; --timestamp
# makes the layer contents and image config reproducible.
pod build --quiet --pull=never --network none --isolation oci \
    --timestamp "$EPOCH" --layers --format oci \
    -t localhost/layered:latest -f "$WORK/ctx/Containerfile" "$WORK/ctx"

log "podman tag localhost/base:latest localhost/base:v1"
pod tag localhost/base:latest localhost/base:v1

# --- 4. containers -------------------------------------------------------------
log "creating containers"
pod create --pull=never --name plain localhost/base:latest true
pod create --pull=never --name contig \
    --uidmap 0:100000:65536 --gidmap 0:100000:65536 \
    localhost/base:latest id
pod create --pull=never --name noncontig \
    --uidmap 0:200000:1000 --uidmap 1000:1000:1 --uidmap 1001:201001:64535 \
    --gidmap 0:200000:65536 \
    localhost/base:latest stat -c '%u:%g %n' /home/user/hello.txt
pod create --pull=never --name layered-mapped \
    --uidmap 0:300000:65536 --gidmap 0:300000:65536 \
    localhost/layered:latest cat /etc/layered.txt /opt/app/two.txt

# Run each container once to completion (mount + runc + unmount).
for ctr in plain contig noncontig layered-mapped; do
    log "podman start -a $ctr"
    pod start -a "$ctr"
done

# --- 5. leave one container mounted -----------------------------------------
log "podman mount plain (left mounted so mountpoints.json is non-empty)"
MNT=$(pod mount plain)
PLAIN_ID=$(pod inspect --format '{{.Id}}' plain)

# --- 6. summary ----------------------------------------------------------------
log "podman images"
pod images --all --no-trunc
log "podman ps -a --external"
pod ps -a --external --no-trunc
log "containers-storage layers"
cs layers
log "containers-storage images"
cs images
log "containers-storage containers"
cs containers
log "mountpoints.json"
cat "$R/overlay-layers/mountpoints.json"; echo

cat <<EOF

store ready:
  graphroot  $G
  runroot    $R
  mounted    container plain ($PLAIN_ID) at $MNT
  env        CONTAINERS_CONF=$CONTAINERS_CONF
  podman     podman --root $G --runroot $R --storage-driver overlay --tmpdir $R/libpod-tmp
  cleanup    $SCRIPT_DIR/cleanup-store.sh $G $R
EOF
