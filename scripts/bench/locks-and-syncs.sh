#!/usr/bin/env bash
# Lock acquisitions and syncs per container start, counted with strace on a
# private store holding the Debian minbase image (debian-rootfs.sh):
#
#   layerstore create --uidmap ... IMAGE        and  containers-storage create-container
#   layerstore run --direct --rm --nocache --uidmap ... IMAGE /bin/true
#   layerstore run --rm --nocache --uidmap ... IMAGE /bin/true   (podman mode:
#                                         podman's own locks and syncs included)
#   podman run --rm IMAGE /bin/true             (the baseline; its own store)
#
# A lock acquisition is an fcntl F_SETLK/F_SETLKW taking a read or write
# lock (containers/storage's lock files; podman's own libpod locks are
# futexes in shared memory and not counted); a sync is an fsync, fdatasync
# or syncfs. Every process of the command is counted (strace -f), by file.
#
#   scripts/bench/locks-and-syncs.sh [LAYERSTORE_BINARY]   (needs root, strace)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
command -v strace >/dev/null || { echo "strace missing (apt install strace)" >&2; exit 1; }
export CONTAINERS_CONF=$PWD/testdata/containers.conf

ls=${1:-}
if [ -z "$ls" ]; then
    cargo build --release --quiet -p layerstore-cli
    ls=$PWD/target/release/layerstore
fi
tar=$(scripts/bench/debian-rootfs.sh)

work=$(mktemp -d /tmp/layerstore-locks.XXXXXX)
cleanup() {
    for s in ls cs pm; do
        testdata/cleanup-store.sh "$work/$s/g" "$work/$s/r" >/dev/null 2>&1 || true
    done
    rm -rf --one-file-system -- "$work"
}
trap cleanup EXIT

# count TRACE: "<locks> <syncs>" and, on stderr, the locks by file.
count() {
    python3 - "$1" <<'EOF'
import re, sys, collections
names, locks, syncs = {}, collections.Counter(), collections.Counter()
for line in open(sys.argv[1]):
    pid = line.split()[0]
    m = re.search(r'open(?:at2?)?\((?:\d+|AT_FDCWD), "([^"]+)".*\) = (\d+)$', line)
    if m:
        names[(pid, m.group(2))] = re.sub(r'^\.tmp-(.*?)\d+$', r'\1 (temp)', m.group(1).rsplit('/', 1)[-1])
    m = re.search(r'fcntl\((\d+), F_SETLKW?, \{l_type=F_(RD|WR)LCK', line)
    if m:
        locks[names.get((pid, m.group(1)), 'fd ' + m.group(1))] += 1
    m = re.search(r'\b(fsync|fdatasync|syncfs)\((\d+)', line)
    if m:
        syncs[m.group(1) + ' ' + names.get((pid, m.group(2)), 'fd ' + m.group(2))] += 1
print(sum(locks.values()), sum(syncs.values()))
print('   locks:', dict(sorted(locks.items())), file=sys.stderr)
print('   syncs:', dict(sorted(syncs.items())), file=sys.stderr)
EOF
}

trace() { # NAME CMD...: run CMD under strace, print the counts
    local name=$1; shift
    strace -f -qq -o "$work/trace" -e trace=open,openat,openat2,fcntl,fsync,fdatasync,syncfs "$@" >/dev/null
    printf '%-58s %6s %6s\n' "$name" $(count "$work/trace" 2>"$work/detail")
    cat "$work/detail"
}

mkdir -p "$work"/{ls,cs,pm}
LS="$ls --root $work/ls/g --runroot $work/ls/r --storage-driver overlay"
CS="containers-storage -g $work/cs/g -R $work/cs/r -s overlay"
PM="podman --root $work/pm/g --runroot $work/pm/r --storage-driver overlay --tmpdir $work/pm/r/tmp"
image=$($LS import "$tar")
layer=$($CS import-layer -f "$tar")
$CS create-image -n debian:bench "$layer" >/dev/null
$PM import "$tar" localhost/debian:bench >/dev/null

# Once untraced first, so that every lock file exists, as on any store
# podman has used (a writer that finds one missing looks at the records
# before it creates it: that first command takes more locks).
$LS rm "$($LS create --uidmap 0:700000:65536 "$image")" >/dev/null
$LS run --direct --rm --nocache --uidmap 0:710000:65536 "$image" /bin/true >/dev/null

printf '%-58s %6s %6s\n' command locks syncs
trace "layerstore create --uidmap (new mapping)" $LS create --uidmap 0:400000:65536 "$image"
trace "containers-storage create-container --uidmap (new mapping)" \
    $CS create-container --uidmap 0:400000:65536 --gidmap 0:400000:65536 debian:bench
trace "layerstore run --direct --rm --nocache --uidmap (new mapping)" \
    $LS run --direct --rm --nocache --uidmap 0:450000:65536 "$image" /bin/true
trace "layerstore run --rm --nocache --uidmap (podman mode: podman's own too)" \
    $LS run --rm --nocache --uidmap 0:500000:65536 "$image" /bin/true
trace "podman run --rm (no mapping)" $PM run --rm localhost/debian:bench /bin/true
trace "podman run --rm --uidmap (new mapping)" \
    $PM run --rm --uidmap 0:600000:65536 --gidmap 0:600000:65536 localhost/debian:bench /bin/true
