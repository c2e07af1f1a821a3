#!/usr/bin/env bash
# Parallel container starts on one store: L loops (1, 2, 4) each running
# `layerstore run --direct --rm --nocache --uidmap <new mapping> IMAGE
# /bin/true` (MODE=podman: without --direct, podman running each one)
# back to back for SECONDS seconds, on one private store holding the Debian
# minbase image (debian-rootfs.sh). Prints starts per second and, from each
# start's own trace log (`--log-level trace`: a "lock taken" line per lock
# acquisition with the microseconds it waited for the lock), the lock wait
# per start and the acquisitions per start.
#
#   scripts/bench/parallel-starts.sh [SECONDS] [LAYERSTORE_BINARY]   (root)
#   env MODE=direct|podman   (default direct: only layerstore's own locks
#                             are on the path; podman's are not logged)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
seconds=${1:-20}
ls=${2:-}
if [ -z "$ls" ]; then
    cargo build --release --quiet -p layerstore-cli
    ls=$PWD/target/release/layerstore
fi
tar=$(scripts/bench/debian-rootfs.sh)
case ${MODE:-direct} in
    direct) run=(run --direct) ;;
    podman) run=(run); export CONTAINERS_CONF=$PWD/testdata/containers.conf ;;
    *) echo "MODE must be direct or podman" >&2; exit 1 ;;
esac

work=$(mktemp -d /tmp/layerstore-starts.XXXXXX)
cleanup() {
    testdata/cleanup-store.sh "$work/g" "$work/r" >/dev/null 2>&1 || true
    rm -rf --one-file-system -- "$work"
}
trap cleanup EXIT
LS="$ls --root $work/g --runroot $work/r --storage-driver overlay"
image=$($LS import "$tar")

loop() { # LOOP DEADLINE: start containers until the deadline
    local n=0 base
    while [ "$(date +%s)" -lt "$2" ]; do
        base=$((1000000 + ($1 * 100000 + n) * 65536 % 3000000000))
        $LS --log-level trace "${run[@]}" --rm --nocache --uidmap "0:$base:65536" "$image" /bin/true \
            2>"$work/trace.$1.$n" >/dev/null
        n=$((n + 1))
    done
    echo "$n" >"$work/count.$1"
}

printf '%-6s %-8s %-13s %-22s %-12s\n' loops starts "starts/s" "lock wait/start (ms)" "locks/start"
for loops in 1 2 4; do
    rm -f "$work"/trace.* "$work"/count.*
    deadline=$(($(date +%s) + seconds))
    for l in $(seq 1 "$loops"); do loop "$l" "$deadline" & done
    wait
    total=$(cat "$work"/count.* | awk '{s += $1} END {print s}')
    rate=$(echo "scale=2; $total / $seconds" | bc)
    read -r wait locks < <(python3 - "$work" <<'EOF'
import glob, re, sys
waits, locks, n = 0, 0, 0
for f in glob.glob(sys.argv[1] + '/trace.*'):
    n += 1
    for line in open(f, errors='replace'):
        m = re.search(r'lock taken .*waited_us=(\d+)', line)
        if m:
            locks += 1
            waits += int(m.group(1))
print('%.2f %.1f' % (waits / 1000 / max(n, 1), locks / max(n, 1)))
EOF
    )
    printf '%-6s %-8s %-13s %-22s %-12s\n' "$loops" "$total" "$rate" "$wait" "$locks"
done
