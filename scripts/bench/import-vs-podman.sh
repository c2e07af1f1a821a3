#!/usr/bin/env bash
# Whole-process import benchmark, side by side in one run on one machine:
#
#   podman import TAR bench:1                          (podman 4.3.1)
#   layerstore import --quiet TAR bench:1              (target/release/layerstore)
#   containers-storage import-layer -f TAR             (optional third column:
#                                                       a layer only, no image)
#
# Every run gets a fresh private store. Each round runs every tool once with
# a cold page cache (`sync; echo 3 > /proc/sys/vm/drop_caches` first) and once
# warm (the tar and the binary still cached from the cold run). The tool order
# rotates between rounds.
#
# The stores are removed (testdata/cleanup-store.sh) only after the last run,
# not between runs: on ext4, for 60 s after a file is deleted its inode number
# is skipped by the allocator whenever the inode table block is still in the
# buffer cache (fs/ext4/ialloc.c, recently_deleted()), and each skip costs a
# buffer-cache lookup. Creating 6,800 files right after deleting a store of
# 6,800 files then costs 2-4 s of extra system time for any tool. A cold run
# is immune (drop_caches empties the buffer cache); a warm one is not. So the
# harness needs about RUNS x 250 MB free under BENCH_DIR (checked), and warm
# figures can still be disturbed by mass deletions elsewhere on the same file
# system in the preceding minute. Wall time and peak RSS come from `/usr/bin/time -f '%e %M'`; peak
# RSS is that of the largest single process of the tool's process tree
# (getrusage's ru_maxrss for children), not a sum. "sync s" is how long a
# `sync` right after the run takes, i.e. the writeback the tool left behind
# (not part of its wall time).
#
#   scripts/bench/import-vs-podman.sh [TAR] [ROUNDS]
#
#   TAR      rootfs tarball (default: scripts/bench/debian-rootfs.sh's cache)
#   ROUNDS   default 3 (or ROUNDS=N)
#   env LAYERSTORE_BIN=PATH   binary to measure (default target/release/layerstore)
#   env BUILD=0               do not `cargo build --release -p layerstore-cli` first
#   env CS=0                  leave out containers-storage import-layer
#   env BENCH_DIR=DIR         where the stores go (default /var/tmp; same fs
#                             matters: it is what is being written to)
#   env RESULTS=FILE          also write every run as TSV to FILE
#
# Needs root (drop_caches, overlay stores). Exits non-zero only when podman
# itself cannot be measured.
set -euo pipefail
trap 'exit 130' INT TERM # so that the EXIT trap removes the stores

cd "$(dirname "$0")/../.."
repo=$PWD
rounds=${2:-${ROUNDS:-3}}
say() { echo "import-vs-podman: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (drop_caches, overlay mounts)"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$rounds'"

if [ ! -x /usr/bin/time ]; then
    say "installing the time package (GNU time)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
command -v podman >/dev/null && command -v containers-storage >/dev/null ||
    scripts/install-deps.sh

tar=${1:-}
[ -n "$tar" ] || tar=$(scripts/bench/debian-rootfs.sh)
[ -f "$tar" ] || die "no such tarball: $tar"
tar=$(realpath -- "$tar")

export CONTAINERS_CONF=$repo/testdata/containers.conf

# --- layerstore: build, then find out whether it can import at all -----------
ls_bin=${LAYERSTORE_BIN:-$repo/target/release/layerstore}
ls_note=""
if [ -z "${LAYERSTORE_BIN:-}" ] && [ "${BUILD:-1}" != 0 ]; then
    say "cargo build --release -p layerstore-cli"
    if ! cargo build --release --quiet -p layerstore-cli >&2; then
        ls_note="build failed; measuring the binary left from an earlier build"
        say "WARNING: $ls_note"
    fi
fi
ls_ok=1
if [ ! -x "$ls_bin" ]; then
    ls_ok=0; ls_note="no binary at $ls_bin"
elif ! "$ls_bin" import --help >/dev/null 2>&1; then
    ls_ok=0; ls_note="$ls_bin has no import command yet"
fi
[ "$ls_ok" = 1 ] || say "layerstore NOT measured: $ls_note"

tools=(podman)
[ "$ls_ok" = 1 ] && tools+=(layerstore)
[ "${CS:-1}" != 0 ] && tools+=(containers-storage)

# --- stores ------------------------------------------------------------------
bench_dir=${BENCH_DIR:-/var/tmp}
mkdir -p "$bench_dir"
work=$(mktemp -d "$bench_dir/layerstore-bench.XXXXXX")
cleanup_all() {
    local d
    say "removing the stores"
    for d in "$work"/store.*; do
        [ -d "$d" ] || continue
        "$repo/testdata/cleanup-store.sh" "$d/g" "$d/r" >/dev/null 2>&1 ||
            say "WARNING: could not clean up $d"
    done
    rm -rf --one-file-system -- "$work"
}
trap cleanup_all EXIT
: >"$work/results"

tool_cmd() { # TOOL G R -> the command, in the array cmd
    local g=$2 r=$3
    case $1 in
        podman) cmd=(podman --root "$g" --runroot "$r" --storage-driver overlay
                     --tmpdir "$r/libpod-tmp" import "$tar" bench:1) ;;
        layerstore) cmd=("$ls_bin" --root "$g" --runroot "$r" --storage-driver overlay
                         import --quiet "$tar" bench:1) ;;
        containers-storage) cmd=(containers-storage -g "$g" -R "$r" -s overlay
                                 import-layer -f "$tar") ;;
    esac
}

# run ROUND CACHE TOOL: one timed run on a fresh store; appends to results.
run() {
    local round=$1 cache=$2 tool=$3 d secs kb sync_s
    d=$(mktemp -d "$work/store.XXXXXX")
    tool_cmd "$tool" "$d/g" "$d/r"
    sync
    if [ "$cache" = cold ]; then
        echo 3 >/proc/sys/vm/drop_caches
    else
        cat -- "$tar" >/dev/null # make sure the input is cached
    fi
    if /usr/bin/time -f '%e %M' -o "$d/time" "${cmd[@]}" >"$d/out" 2>"$d/err"; then
        read -r secs kb <"$d/time"
        sync_s=$( { /usr/bin/time -f '%e' sync; } 2>&1 )
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$cache" "$tool" "$secs" "$kb" "$sync_s" >>"$work/results"
        printf '%-5s %-5s %-20s %8s %10.1f %8s\n' "$round" "$cache" "$tool" "$secs" "$(awk -v k="$kb" 'BEGIN { print k / 1024 }')" "$sync_s"
    else
        printf '%s\t%s\t%s\tFAIL\tFAIL\t-\n' "$round" "$cache" "$tool" >>"$work/results"
        printf '%-5s %-5s %-20s %8s\n' "$round" "$cache" "$tool" FAILED
        say "$tool failed ($(grep -m 1 -iE 'exit|signal' "$d/time" 2>/dev/null || echo 'no exit status')):"
        tail -n 5 "$d/err" >&2
    fi
    # the store stays until the end (see the top of this file)
}

# --- header ------------------------------------------------------------------
entries=$(tar -tf "$tar" | wc -l)
bytes=$(stat -c %s "$tar")
runs=$((rounds * ${#tools[@]} * 2))
need_kb=$((runs * (bytes / 1024) * 5 / 4 + 1048576))
avail_kb=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
[ "$avail_kb" -ge "$need_kb" ] ||
    die "$runs runs need about $((need_kb / 1048576)) GiB free in $bench_dir, only $((avail_kb / 1048576)) GiB: fewer ROUNDS, CS=0 or another BENCH_DIR"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
# only changes that can reach the binary count (not docs/, scripts/)
git diff --quiet HEAD -- . ':!docs' ':!scripts' 2>/dev/null &&
    [ -z "$(git ls-files --others --exclude-standard -- . ':!docs' ':!scripts' 2>/dev/null)" ] ||
    commit="$commit+uncommitted changes"
echo "# import-vs-podman $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# input:   $tar ($entries entries, $bytes bytes)"
echo "# machine: $(uname -sr), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB," \
     "stores on $(findmnt -no FSTYPE -T "$work") ($work), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# podman:  $(podman --version | awk '{print $3}'), containers-storage CLI $(dpkg-query -W -f='${Version}' containers-storage 2>/dev/null || echo '?')"
if [ "$ls_ok" = 1 ]; then
    echo "# layerstore: $ls_bin ($("$ls_bin" --version 2>/dev/null | awk '{print $2}'), tree at $commit, binary built $(date -u -r "$ls_bin" '+%Y-%m-%d %H:%M UTC'))${ls_note:+ WARNING: $ls_note}"
else
    echo "# layerstore: NOT MEASURED: $ls_note"
fi
echo "# $rounds rounds; each: every tool cold (page cache dropped) then warm"
echo
printf '%-5s %-5s %-20s %8s %10s %8s\n' round cache tool 'wall s' 'RSS MB' 'sync s'

for round in $(seq "$rounds"); do
    # rotate the order so no tool always runs first / after the same one
    n=${#tools[@]}
    for i in $(seq 0 $((n - 1))); do
        tool=${tools[$(((i + round - 1) % n))]}
        run "$round" cold "$tool"
        run "$round" warm "$tool"
    done
done

[ -z "${RESULTS:-}" ] || { printf 'round\tcache\ttool\twall_s\tpeak_rss_kb\tsync_s\n'; cat "$work/results"; } >"$RESULTS"

# --- summary -----------------------------------------------------------------
median() { # TOOL CACHE FIELD(4=wall, 5=rss kb) -> median over the runs that worked
    awk -F'\t' -v t="$1" -v c="$2" -v f="$3" '$3 == t && $2 == c && $4 != "FAIL" { print $f }' "$work/results" |
        sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() { # TOOL CACHE -> min-max wall
    awk -F'\t' -v t="$1" -v c="$2" '$3 == t && $2 == c && $4 != "FAIL" { print $4 }' "$work/results" |
        sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s-%s", lo, hi; else print "-" }'
}
mb() { [ "$1" = - ] && echo - || echo "$1" | awk '{ printf "%.1f", $1 / 1024 }'; }
ratio() { [ "$1" = - ] || [ "$2" = - ] && echo - || awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo
echo "median of $rounds rounds (wall-time range in brackets), $entries entries, $((bytes / 1000000)) MB:"
printf '%-20s %22s %10s %22s %10s\n' tool 'cold wall s' 'RSS MB' 'warm wall s' 'RSS MB'
for tool in "${tools[@]}"; do
    printf '%-20s %22s %10s %22s %10s\n' "$tool" \
        "$(median "$tool" cold 4) [$(range "$tool" cold)]" "$(mb "$(median "$tool" cold 5)")" \
        "$(median "$tool" warm 4) [$(range "$tool" warm)]" "$(mb "$(median "$tool" warm 5)")"
done
echo
for tool in "${tools[@]}"; do
    [ "$tool" != podman ] || continue
    echo "$tool / podman: wall time cold $(ratio "$(median "$tool" cold 4)" "$(median podman cold 4)")," \
         "warm $(ratio "$(median "$tool" warm 4)" "$(median podman warm 4)");" \
         "peak RSS cold $(ratio "$(median "$tool" cold 5)" "$(median podman cold 5)")," \
         "warm $(ratio "$(median "$tool" warm 5)" "$(median podman warm 5)")"
done
[ "$ls_ok" = 1 ] || echo "layerstore / podman: not measured ($ls_note)"

# podman must have worked in at least one run, or the comparison is void
[ "$(median podman cold 4)" != - ] || die "podman import failed in every cold run"
