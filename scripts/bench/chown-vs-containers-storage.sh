#!/usr/bin/env bash
# Whole-process timing of the ID-mapped template copy (chown-by-maps through
# overlay copy-up) made for a new non-contiguous mapping:
#   (a) containers-storage v1.43: `create-container --uidmap ... IMAGE` on a
#       store with R/overlay/idmapped-lower-dir-false (so it copies, as podman
#       4.3.1 does without idmapped lowers);
#   (b) ours: driver-overlay/examples/template.rs, which creates a child of
#       the same image top layer and runs update_layer_id_map with a map of
#       the same shape.
# Same store, same template (the Debian minbase rootfs from debian-rootfs.sh),
# a fresh mapping every run (so every run copies), ROUNDS alternating rounds.
# Needs root.  Usage: scripts/bench/chown-vs-containers-storage.sh [ROUNDS]
set -euo pipefail

rounds=${1:-3}
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "must run as root" >&2; exit 1; }
command -v containers-storage >/dev/null || { echo "containers-storage missing (scripts/install-deps.sh)" >&2; exit 1; }

tar=$("$here/debian-rootfs.sh")
(cd "$repo" && cargo build --release -q -p layerstore-overlay --example template)
ours_bin=$repo/target/release/examples/template

work=$(mktemp -d "${TMPDIR:-/tmp}/chown-vs-cs.XXXXXX")
G=$work/graph R=$work/run
CS="containers-storage -g $G -R $R -s overlay"
cleanup() { $CS shutdown >/dev/null 2>&1 || true; umount -R "$G/overlay" 2>/dev/null || true; rm -rf -- "$work"; }
trap cleanup EXIT
mkdir -p "$G" "$R/overlay"
touch "$R/overlay/idmapped-lower-dir-false"

layer=$($CS import-layer -f "$tar")
$CS create-image -n debian:bench "$layer" >/dev/null
entries=$(tar -tf "$tar" | wc -l)

now() { date +%s.%N; }
uidmap() { # a non-contiguous map with host base $1
    local b=$1; echo "0:$b:1000:1000:1000:1:1001:$((b + 1001)):64535"; }

echo "template: $tar ($entries tar entries), store $G"
printf '%-6s %-28s %-12s %-12s\n' round "containers-storage (s)" "ours (s)" ratio
cs_all=() ours_all=()
for i in $(seq 1 "$rounds"); do
    base_cs=$((1000000 + i * 200000)) base_ours=$((1100000 + i * 200000))
    t0=$(now)
    $CS create-container --uidmap "$(uidmap $base_cs)" --gidmap "0:$base_cs:65536" debian:bench >/dev/null
    t1=$(now)
    id=$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)
    "$ours_bin" "$G" "$R" "$layer" "$id" "$(uidmap $base_ours)" "0:$base_ours:65536" >/dev/null
    t2=$(now)
    cs_t=$(echo "$t1 - $t0" | bc) ours_t=$(echo "$t2 - $t1" | bc)
    cs_all+=("$cs_t") ours_all+=("$ours_t")
    printf '%-6s %-28.3f %-12.3f %.1fx\n' "$i" "$cs_t" "$ours_t" "$(echo "$cs_t / $ours_t" | bc -l)"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_cs=$(median "${cs_all[@]}") m_ours=$(median "${ours_all[@]}")
printf 'median %-28.3f %-12.3f %.1fx\n' "$m_cs" "$m_ours" "$(echo "$m_cs / $m_ours" | bc -l)"
