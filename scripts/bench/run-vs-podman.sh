#!/usr/bin/env bash
# Whole-process comparison, side by side in one run, on the Debian minbase
# image: starting `/bin/true` in a container with a NEW non-contiguous
# mapping each time.
#
#   podman run --rm IMAGE /bin/true                  no mapping (the baseline)
#   podman run --rm --uidmap ... IMAGE /bin/true     new mapping: the template copy
#                                                    (store with idmapped-lower-dir-false,
#                                                    as on kernels without idmapped lowers)
#   layerstore run --rm --uidmap ...                 new mapping, idmapped mount, podman
#                                                    runs it (podman run --rootfs; the
#                                                    default mode, with the OCI hook)
#   layerstore run --direct --rm --nocache --uidmap  new mapping, no copy, own launcher
#   layerstore run --direct --rm --uidmap ...        new mapping, idmapped, own launcher
#
#   scripts/bench/run-vs-podman.sh [ROUNDS]          (default 15; needs root)
#
# Prints each command's median and quartiles (milliseconds) and the inodes
# the store's filesystem gained per run. Commands are interleaved round by
# round so machine noise hits them alike.
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=${1:-15}
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

tar=$(scripts/bench/debian-rootfs.sh)
cargo build --release --quiet -p layerstore-cli
ls=$PWD/target/release/layerstore

work=$(mktemp -d /tmp/layerstore-bench.XXXXXX)
cleanup() {
    for s in shared copying; do
        testdata/cleanup-store.sh "$work/$s/g" "$work/$s/r" >/dev/null 2>&1 || true
        umount "$work/$s" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# podman's configuration for both stores: the test one, with the runtime
# state per store (layerstore's podman gets no --tmpdir) and the OCI hook.
mkdir -p "$work/hooks"
"$ls" oci-hook --print-config > "$work/hooks/layerstore.json"
conf() {
    cat testdata/containers.conf
    echo "tmp_dir = \"$work/$1/r/libpod-tmp\""
    echo "hooks_dir = [\"$work/hooks\"]"
}

# Each store on its own tmpfs, so that used inodes are exact.
for s in shared copying; do
    mkdir -p "$work/$s"
    mount -t tmpfs -o size=4g,mode=0755 "bench-$s" "$work/$s"
done
mkdir -p "$work/copying/r/overlay"
touch "$work/copying/r/overlay/idmapped-lower-dir-false"

for s in shared copying; do conf $s > "$work/$s.conf"; done
pm() { local s=$1; shift; CONTAINERS_CONF=$work/$s.conf podman --root "$work/$s/g" --runroot "$work/$s/r" --storage-driver overlay "$@"; }
lsr() { local s=$1; shift; CONTAINERS_CONF=$work/$s.conf "$ls" --root "$work/$s/g" --runroot "$work/$s/r" --storage-driver overlay "$@"; }
inodes() { df --output=iused "$work/$1" | tail -n 1 | tr -d ' '; }

pm shared import -q "$tar" localhost/debian >/dev/null
pm copying import -q "$tar" localhost/debian >/dev/null

maps() { # a new non-contiguous mapping per round and command
    local base=$(( ($1 + 1) * 1000000 ))
    echo "--uidmap 0:$base:65536 --uidmap 70000:$((base + 70000)):1 --gidmap 0:$base:65537"
}

declare -A times inode_gain
names=(podman-nomap podman-newmap-copy layerstore-podman direct-nocache direct-idmapped)
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# One warm-up round each (page cache, runtime state dirs).
pm shared run --rm localhost/debian /bin/true
lsr shared run --rm $(maps 0) localhost/debian /bin/true
lsr shared run --direct --rm --nocache $(maps 1) localhost/debian /bin/true
lsr shared run --direct --rm $(maps 2) localhost/debian /bin/true

for ((i = 1; i <= rounds; i++)); do
    for name in "${names[@]}"; do
        case $name in
            podman-nomap)        store=shared;  cmd=(pm shared run --rm localhost/debian /bin/true) ;;
            podman-newmap-copy)  store=copying; cmd=(pm copying run --rm $(maps $((i * 5 + 0))) localhost/debian /bin/true) ;;
            layerstore-podman)   store=shared;  cmd=(lsr shared run --rm $(maps $((i * 5 + 1))) localhost/debian /bin/true) ;;
            direct-nocache)      store=shared;  cmd=(lsr shared run --direct --rm --nocache $(maps $((i * 5 + 2))) localhost/debian /bin/true) ;;
            direct-idmapped)     store=shared;  cmd=(lsr shared run --direct --rm $(maps $((i * 5 + 3))) localhost/debian /bin/true) ;;
        esac
        before=$(inodes $store)
        t0=$(now_ms)
        "${cmd[@]}" >/dev/null
        t1=$(now_ms)
        times[$name]+="$((t1 - t0)) "
        inode_gain[$name]+="$(( $(inodes $store) - before )) "
    done
done

stats() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {printf "%6d %6d %6d", a[int(NR/4)+1], a[int(NR/2)+1], a[int(3*NR/4)+1]}'; }
printf '%-22s %6s %6s %6s   %s\n' command q1 median q3 "inodes kept per run (median)"
for name in "${names[@]}"; do
    printf '%-22s %s   %s\n' "$name" "$(echo "${times[$name]}" | stats)" \
        "$(echo "${inode_gain[$name]}" | stats | awk '{print $2}')"
done
echo "($rounds rounds, ms; $(nproc) cores; kernel $(uname -r); podman $(podman --version | awk '{print $3}'); runc $(runc --version | head -n1 | awk '{print $3}'))"
