#!/usr/bin/env bash
# Whole-process comparison, side by side in one run: the direct launcher
# starting `/bin/true` with a NEW mapping each time, against bare
# `runc run` of the same container config on a bundle prepared once (the
# floor: the runtime alone, no store, no mount, no config written).
#
#   runc run --bundle B ID                          the launcher's own config.json
#   layerstore run --direct --rm --nocache --uidmap ... IMAGE /bin/true
#   layerstore run --direct --rm --uidmap ...       (idmapped)
#
#   scripts/bench/direct-vs-runc.sh [ROUNDS]        (default 15; needs root)
#
# Prints each command's median and quartiles (milliseconds), interleaved
# round by round so machine noise hits them alike.
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=${1:-15}
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

tar=$(scripts/bench/debian-rootfs.sh)
cargo build --release --quiet -p layerstore-cli
ls=$PWD/target/release/layerstore

work=$(mktemp -d /tmp/layerstore-bench.XXXXXX)
cleanup() {
    runc --root "$work/runc" delete --force bench-floor >/dev/null 2>&1 || true
    testdata/cleanup-store.sh "$work/s/g" "$work/s/r" >/dev/null 2>&1 || true
    umount "$work/s" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/s" && mount -t tmpfs -o size=4g,mode=0755 bench-direct "$work/s"
lsr() { "$ls" --root "$work/s/g" --runroot "$work/s/r" --storage-driver overlay "$@"; }
lsr import --quiet "$tar" localhost/debian >/dev/null

# The floor's bundle: the very config the direct launcher writes (user
# namespace, seccomp filter, masked paths, cgroups, etc files), from one run
# kept for it, on that container's rootfs mounted again: runc alone does
# everything a run needs of the runtime, layerstore nothing.
lsr run --direct --name floor --uidmap 0:900000000:65536 localhost/debian /bin/true
ctr=$(lsr containers --json | python3 -c 'import json,sys; print([c["id"] for c in json.load(sys.stdin) if "floor" in c.get("names", [])][0])')
lsr mount "$ctr" >/dev/null
mkdir -p "$work/bundle" "$work/runc"
cp "$work/s/r/overlay-containers/$ctr/userdata/config.json" "$work/bundle/config.json"

maps() {
    local base=$(( ($1 + 1) * 1000000 ))
    echo "--uidmap 0:$base:65536 --uidmap 70000:$((base + 70000)):1 --gidmap 0:$base:65537"
}
declare -A times
names=(runc-run direct-nocache direct-idmapped)
now_ns() { date +%s%N; }
runc --root "$work/runc" run --bundle "$work/bundle" bench-floor >/dev/null
lsr run --direct --rm --nocache $(maps 0) localhost/debian /bin/true
for ((i = 1; i <= rounds; i++)); do
    for name in "${names[@]}"; do
        case $name in
            runc-run)        cmd=(runc --root "$work/runc" run --bundle "$work/bundle" bench-floor) ;;
            direct-nocache)  cmd=(lsr run --direct --rm --nocache $(maps $((i * 3)))  localhost/debian /bin/true) ;;
            direct-idmapped) cmd=(lsr run --direct --rm $(maps $((i * 3 + 1))) localhost/debian /bin/true) ;;
        esac
        t0=$(now_ns); "${cmd[@]}" >/dev/null; t1=$(now_ns)
        times[$name]+="$(( (t1 - t0) / 100000 )) "
    done
done
stats() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {printf "%7.1f %7.1f %7.1f", a[int(NR/4)+1]/10, a[int(NR/2)+1]/10, a[int(3*NR/4)+1]/10}'; }
printf '%-18s %7s %7s %7s\n' command q1 median q3
for name in "${names[@]}"; do printf '%-18s %s\n' "$name" "$(echo "${times[$name]}" | stats)"; done
lsr umount "$ctr" >/dev/null 2>&1 || true
echo "($rounds rounds, ms; $(nproc) cores; kernel $(uname -r); runc $(runc --version | head -n1 | awk '{print $3}'))"
