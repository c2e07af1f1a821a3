#!/bin/bash
# cleanup-store.sh G R
#
# Tear down a private store made by make-podman-store.sh (or any private
# podman / containers-storage store): stop containers, unmount everything,
# shut the graph driver down, then remove G and R.
#
#   1. podman stop -a / podman umount -a   (only if G looks like a podman store)
#   2. containers-storage -g G -R R -s overlay shutdown
#      (unmounts the private bind mount c/storage puts on G/overlay)
#   3. umount whatever is still mounted under G or R (from /proc/self/mountinfo,
#      deepest first, repeated for stacked mounts; lazy umount as last resort)
#   4. refuse to delete if anything is still mounted, else rm -rf G R
#
# Refuses G = /, /var/lib/containers*, and R = /, /run, /run/containers*.

set -euo pipefail

usage() { echo "usage: $0 GRAPHROOT RUNROOT" >&2; exit 2; }
die() { echo "$0: $*" >&2; exit 1; }

[ $# -eq 2 ] || usage
[ -n "$1" ] && [ -n "$2" ] || usage
G=$(realpath -m -- "$1")
R=$(realpath -m -- "$2")
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

case "$G" in
    / | /var/lib/containers | /var/lib/containers/* | /var | /var/lib | /home | /root | /tmp | /work | /work/main | /work/main/testdata) die "refusing graphroot $G" ;;
esac
case "$R" in
    / | /run | /var/run | /run/containers | /run/containers/* | /var/run/containers* | /var | /home | /root | /tmp | /work | /work/main | /work/main/testdata) die "refusing runroot $R" ;;
esac

export CONTAINERS_CONF="${CONTAINERS_CONF:-$SCRIPT_DIR/containers.conf}"

# Each tool gets a minute: a broken store (a FIFO where a record file
# should be) can make it wait forever, and the store must still go.
pod() {
    timeout -k 5 60 podman --root "$G" --runroot "$R" --storage-driver overlay \
        --tmpdir "$R/libpod-tmp" "$@"
}

# Mount points at or below G or R, deepest first. Field 5 of mountinfo is
# the mount point with space, tab, newline and backslash octal-escaped.
mounts_below() {
    local mp
    awk '{print $5}' /proc/self/mountinfo | while IFS= read -r mp; do
        mp=$(printf '%b' "$mp")
        case "$mp" in
            "$G" | "$G"/* | "$R" | "$R"/*) printf '%s\n' "$mp" ;;
        esac
    done | awk '{ print length($0) "\t" $0 }' | sort -rn -k1,1 | cut -f2-
}

# 1. podman-level cleanup (best effort: a broken store must still be removable)
if [ -d "$G/libpod" ] && command -v podman >/dev/null; then
    pod stop -a -t 0 >/dev/null 2>&1 || echo "warning: podman stop -a failed" >&2
    pod umount -a >/dev/null 2>&1 || echo "warning: podman umount -a failed" >&2
fi

# 2. c/storage shutdown (unmounts G/overlay's private bind mount). It fails if
#    layers are still mounted; step 3 deals with that.
if [ -d "$G/overlay" ] && command -v containers-storage >/dev/null; then
    timeout -k 5 60 containers-storage -g "$G" -R "$R" -s overlay shutdown >/dev/null 2>&1 ||
        echo "warning: containers-storage shutdown failed" >&2
fi

# 3. unmount leftovers; stacked mounts on one path need several passes.
for _pass in 1 2 3 4 5 6 7 8; do
    left=$(mounts_below)
    [ -n "$left" ] || break
    while IFS= read -r mp; do
        echo "unmounting $mp" >&2
        umount -- "$mp" 2>/dev/null || umount -l -- "$mp" 2>/dev/null ||
            echo "warning: cannot unmount $mp" >&2
    done <<<"$left"
done

left=$(mounts_below)
if [ -n "$left" ]; then
    printf 'still mounted, not removing anything:\n%s\n' "$left" >&2
    exit 1
fi

# 4. remove
rm -rf -- "$G" "$R"
echo "removed $G $R" >&2
