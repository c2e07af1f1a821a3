#!/usr/bin/env bash
# Whole-process scaling benchmark: layerstore's read commands, gc planning
# and container create/remove against the containers-storage v1.43 CLI, on
# generated stores of growing size (storegen, benches/src/storegen: images
# of a base and a top layer, 196 mapped copies of the top and 2 containers
# each, i.e. 200 layer records per image, records byte-for-byte as
# containers/storage writes them).
#
# Pairs, each run as a separate process on the same store:
#
#   layerstore                    containers-storage
#   info                          status
#   layers                        layers
#   layers --json                 layers --json
#   images                        images
#   containers                    containers
#   gc --dry-run                  layers        (c/storage has no gc; listing
#                                                the layers is the nearest)
#   gc --dry-run --size           layers        (the same plan, and the walk
#                                                measuring what it would free)
#   create --name X IMG; rm X     create-container IMG; delete-container ID
#
# Each size's store is generated once and cached under
# ${LAYERSTORE_CACHE:-$HOME/.cache/layerstore}/scale-N, with the sha256 of
# its three record files: a store whose records differ (create/rm are
# expected to leave them byte for byte as they were) is generated again.
# Delete scale-N to regenerate by hand. 1,000,000 layers take about 7 M
# inodes and 31 GB of 4 KiB directory and file blocks on ext4 (see
# `df -i`), 5-9 minutes to generate on 2 cores and longer to delete.
#
# ROUNDS interleaved rounds (each command of both tools once per round, the
# tool order alternating between rounds); wall time from `date +%s%N`
# around the process (ms resolution), peak RSS from `/usr/bin/time -f %M`
# (ru_maxrss of the largest process), medians over the rounds that
# finished. A command is stopped after TIMEOUT seconds and reported as
# "timeout"; it is not run again in later rounds of that size. WARMUP
# rounds come first and are not counted: a host that runs these commands
# regularly has the store's metadata in the kernel's caches, and a first
# round after generating another store reads it from disk (in
# RESULTS as round 0).
#
#   scripts/bench/scale-vs-containers-storage.sh
#
#   env SIZES="1000 10000 100000 1000000"   layer records per store
#   env ROUNDS=5                            rounds per size
#   env WARMUP=1                            uncounted rounds before them
#   env TIMEOUT=600                         seconds per command
#   env BUILD=0                             do not `cargo build --release` first
#   env RESULTS=FILE                        also write every run as TSV to FILE
#   env COMMANDS="info layers ..."          only these pairs (names below:
#                                           info layers layers-json images
#                                           containers gc-dry-run
#                                           gc-dry-run-size create-rm)
#   env LAYERSTORE_CACHE=DIR                where the generated stores live
#
# Needs root (the stores' mapped layers are owned by their mappings' ids).
set -euo pipefail
trap 'exit 130' INT TERM # so that the EXIT trap removes the work directory

cd "$(dirname "$0")/../.."
repo=$PWD
sizes=${SIZES:-1000 10000 100000 1000000}
rounds=${ROUNDS:-5}
warmup=${WARMUP:-1}
timeout_s=${TIMEOUT:-600}
cache=${LAYERSTORE_CACHE:-$HOME/.cache/layerstore}
target=${CARGO_TARGET_DIR:-$repo/target}
ls_bin=$target/release/layerstore
gen_bin=$target/release/storegen
image=localhost/img0:latest # storegen's first image
say() { echo "scale-vs-containers-storage: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$rounds'"
[[ "$warmup" =~ ^[0-9]+$ ]] || die "WARMUP must be a number, not '$warmup'"
for n in $sizes; do [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "SIZES: '$n' is not a number"; done
command -v containers-storage >/dev/null || die "containers-storage missing (apt-get install containers-storage)"
if [ ! -x /usr/bin/time ]; then
    say "installing the time package (GNU time)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
if [ "${BUILD:-1}" != 0 ]; then
    say "cargo build --release -p layerstore-cli -p layerstore-benches --bin layerstore --bin storegen"
    cargo build --release --quiet -p layerstore-cli -p layerstore-benches --bin layerstore --bin storegen >&2
fi
[ -x "$ls_bin" ] || die "no binary at $ls_bin (BUILD=0?)"
[ -x "$gen_bin" ] || die "no binary at $gen_bin (BUILD=0?)"

work=$(mktemp -d "${TMPDIR:-/tmp}/scale-vs-cs.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
: >"$work/results"

# --- stores ------------------------------------------------------------------
# store N: make sure $cache/scale-N holds a complete generated store whose
# records are as generated (records.sha256 is written last; a store
# without it, or whose records differ, e.g. after an interrupted
# create/rm, is made again).
store() {
    local n=$1 dir=$cache/scale-$1 t0 t1
    if [ -f "$dir/records.sha256" ]; then
        if sha256sum --quiet --check "$dir/records.sha256" >/dev/null 2>&1; then
            return 0
        fi
        say "the records in $dir are not as generated: generating them again"
    fi
    # containers-storage (and layerstore) bind-mount the overlay home onto
    # itself and leave it so: a mount point cannot be removed.
    if mountpoint -q "$dir/graph/overlay"; then
        umount -R "$dir/graph/overlay"
    fi
    rm -rf --one-file-system -- "$dir"
    mkdir -p "$cache"
    say "generating $n layer records into $dir"
    t0=$(date +%s%N)
    "$gen_bin" --layers "$n" "$dir" >"$work/gen.txt"
    t1=$(date +%s%N)
    { cat "$work/gen.txt"; echo "generated in $(ms "$t0" "$t1") s, $(date -u '+%Y-%m-%d %H:%M UTC')"; } >"$dir/storegen.txt"
    records_sum "$dir" >"$dir/records.sha256.tmp"
    mv -- "$dir/records.sha256.tmp" "$dir/records.sha256"
    say "$(head -n 1 "$dir/storegen.txt")"
}
records_sum() { sha256sum "$1"/graph/overlay-{layers/layers,images/images,containers/containers}.json; }

# --- timing ------------------------------------------------------------------
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

# timed CMD...: run CMD under timeout; sets secs, kb and status (ok,
# timeout or "exit N"); stdout in $work/out, stderr in $work/err.
timed() {
    local t0 t1 rc=0
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$work/time" timeout "$timeout_s" "$@" >"$work/out" 2>"$work/err" || rc=$?
    t1=$(date +%s%N)
    secs=$(ms "$t0" "$t1")
    kb=$(tail -n 1 "$work/time")
    case $rc in
        0) status=ok ;;
        124) status=timeout ;;
        *) status="exit $rc"
           say "$* failed ($status): $(tail -n 3 "$work/err" | tr '\n' ' ')" ;;
    esac
}

# record SIZE ROUND COMMAND TOOL: append the last run (timed's globals).
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$secs" "$kb" "$status" >>"$work/results"
}

all_commands=(info layers layers-json images containers gc-dry-run gc-dry-run-size create-rm)
read -r -a commands <<<"${COMMANDS:-${all_commands[*]}}"
for c in "${commands[@]}"; do
    [[ " ${all_commands[*]} " == *" $c "* ]] || die "COMMANDS: unknown pair '$c' (known: ${all_commands[*]})"
done
label() {
    case $1 in
        info) echo "info | status" ;;
        layers) echo "layers" ;;
        layers-json) echo "layers --json" ;;
        images) echo "images" ;;
        containers) echo "containers" ;;
        gc-dry-run) echo "gc --dry-run | layers (*)" ;;
        gc-dry-run-size) echo "gc --dry-run --size | layers (*)" ;;
        create-rm) echo "create+rm | create-container+delete-container" ;;
    esac
}

# run_side TOOL COMMAND ROUND: one timed run of one side of a pair.
run_side() {
    local tool=$1 cmd=$2 round=$3 g=$store_dir/graph r=$store_dir/run
    local ls=("$ls_bin" --root "$g" --runroot "$r" --storage-driver overlay)
    local cs=(containers-storage -g "$g" -R "$r" -s overlay)
    case $tool/$cmd in
        layerstore/info) timed "${ls[@]}" info ;;
        layerstore/layers) timed "${ls[@]}" layers ;;
        layerstore/layers-json) timed "${ls[@]}" layers --json ;;
        layerstore/images) timed "${ls[@]}" images ;;
        layerstore/containers) timed "${ls[@]}" containers ;;
        layerstore/gc-dry-run) timed "${ls[@]}" gc --dry-run ;;
        layerstore/gc-dry-run-size) timed "${ls[@]}" gc --dry-run --size ;;
        layerstore/create-rm) two_step "${ls[@]}" -- create --name "scale-bench-$round" "$image" -- rm "scale-bench-$round" ;;
        containers-storage/info) timed "${cs[@]}" status ;;
        containers-storage/layers | containers-storage/gc-dry-run*) timed "${cs[@]}" layers ;;
        containers-storage/layers-json) timed "${cs[@]}" layers --json ;;
        containers-storage/images) timed "${cs[@]}" images ;;
        containers-storage/containers) timed "${cs[@]}" containers ;;
        containers-storage/create-rm) two_step "${cs[@]}" -- create-container "$image" -- delete-container ID ;;
    esac
}

# two_step BASE... -- FIRST... -- SECOND...: time FIRST, then SECOND with
# the word ID replaced by the first line FIRST printed; secs is the sum,
# kb the larger peak. If FIRST fails or times out, SECOND is still tried
# (untimed, up to an hour) to leave the store as it was; a store whose
# records changed anyway is regenerated by the next run.
two_step() {
    local base=() first=() second=() id s1 k1
    while [ "$1" != -- ]; do base+=("$1"); shift; done; shift
    while [ "$1" != -- ]; do first+=("$1"); shift; done; shift
    second=("$@")
    timed "${base[@]}" "${first[@]}"
    local st1=$status
    s1=$secs k1=$kb
    id=$(head -n 1 "$work/out")
    second=("${second[@]/#ID/$id}")
    if [ "$st1" != ok ]; then
        [ -z "$id" ] || timeout 3600 "${base[@]}" "${second[@]}" >/dev/null 2>&1 || true
        secs=$s1 kb=$k1 status=$st1
        return
    fi
    timed "${base[@]}" "${second[@]}"
    secs=$(awk -v a="$s1" -v b="$secs" 'BEGIN { printf "%.3f", a + b }')
    [ "$k1" -le "$kb" ] || kb=$k1
}

# --- summary helpers ---------------------------------------------------------
# median SIZE COMMAND TOOL FIELD(5=secs, 6=kb): over the runs that finished;
# "timeout" when none did and one timed out, "-" when none ran.
median() {
    awk -F'\t' -v n="$1" -v c="$2" -v t="$3" -v f="$4" '
        $1 == n && $2 > 0 && $3 == c && $4 == t { if ($7 == "ok") print $f; else if ($7 == "timeout") print "T" }' "$work/results" |
        sort -n | awk '
            $1 == "T" { timeouts++; next }
            { v[++k] = $1 }
            END {
                if (k == 0) print (timeouts ? "timeout" : "-")
                else if (k % 2) print v[(k + 1) / 2]
                else print (v[k / 2] + v[k / 2 + 1]) / 2
            }'
}
num() { [[ "$1" =~ ^[0-9.]+$ ]]; }
ratio() { if num "$1" && num "$2" && [ "$2" != 0 ] && [ "$2" != 0.000 ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else echo -; fi; }
mb() { if num "$1"; then awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; else echo "$1"; fi; }
secs3() { if num "$1"; then printf '%.3f' "$1"; else echo "$1"; fi; }

# --- header ------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
git diff --quiet HEAD -- . ':!docs' ':!scripts' 2>/dev/null || commit="$commit+uncommitted changes"
mkdir -p "$cache" # so that the filesystem below is the stores' own
echo "# scale-vs-containers-storage $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# machine: $(uname -sr), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB," \
     "stores on $(findmnt -no FSTYPE -T "$cache" 2>/dev/null || echo '?') ($cache)," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# containers-storage CLI $(dpkg-query -W -f='${Version}' containers-storage 2>/dev/null || echo '?');" \
     "layerstore $("$ls_bin" --version 2>/dev/null | awk '{print $2}') (tree at $commit, binary built $(date -u -r "$ls_bin" '+%Y-%m-%d %H:%M UTC'))"
echo "# sizes: $sizes; $rounds rounds after $warmup uncounted; timeout ${timeout_s}s per command"
echo "# (*) containers-storage has no gc: gc --dry-run is paired with listing the layers, the nearest it has"

# --- runs --------------------------------------------------------------------
for n in $sizes; do
    store "$n"
    store_dir=$cache/scale-$n
    json_mb=$(stat -c %s "$store_dir/graph/overlay-layers/layers.json" | awk '{ printf "%.1f", $1 / 1e6 }')
    cat "$store_dir/graph/overlay-layers/layers.json" >/dev/null # warm the page cache
    declare -A gave_up=()
    for round in $(seq $((1 - warmup)) "$rounds"); do
        tools=(layerstore containers-storage)
        [ $((round % 2)) = 1 ] || tools=(containers-storage layerstore)
        for cmd in "${commands[@]}"; do
            for tool in "${tools[@]}"; do
                if [ -n "${gave_up[$tool/$cmd]:-}" ]; then
                    secs=- kb=- status=timeout
                else
                    run_side "$tool" "$cmd" "$round"
                    [ "$status" != timeout ] || gave_up[$tool/$cmd]=1
                fi
                record "$n" "$round" "$cmd" "$tool"
            done
        done
    done
    unset gave_up
    changed=""
    if ! sha256sum --quiet --check "$store_dir/records.sha256" >/dev/null 2>&1; then
        changed=" WARNING: the records changed during the runs (regenerated next time)"
        say "$changed"
    fi

    echo
    echo "== $n layer records: $(head -n 1 "$store_dir/storegen.txt" | sed 's/^storegen: //; s/ in .*//');" \
         "layers.json $json_mb MB; median of $rounds rounds$changed"
    printf '%-48s %10s %10s %8s %9s %9s %9s\n' command 'ls s' 'cs s' 'ls/cs' 'ls RSS MB' 'cs RSS MB' 'json MB'
    for cmd in "${commands[@]}"; do
        a=$(median "$n" "$cmd" layerstore 5) b=$(median "$n" "$cmd" containers-storage 5)
        printf '%-48s %10s %10s %8s %9s %9s %9s\n' "$(label "$cmd")" "$(secs3 "$a")" "$(secs3 "$b")" "$(ratio "$a" "$b")" \
            "$(mb "$(median "$n" "$cmd" layerstore 6)")" "$(mb "$(median "$n" "$cmd" containers-storage 6)")" "$json_mb"
    done
done

[ -z "${RESULTS:-}" ] || { printf 'layers\tround\tcommand\ttool\twall_s\tpeak_rss_kb\tstatus\n'; cat "$work/results"; } >"$RESULTS"

# --- scaling -----------------------------------------------------------------
read -r -a sz <<<"$sizes"
echo
echo "== scaling: median wall seconds by layer records; growth = t(size) / t(previous size)" \
     "(10x the records: ~10 is linear, ~100 quadratic)"
head=$(printf '%-48s %-18s' command tool)
for n in "${sz[@]}"; do head+=$(printf ' %10s' "$n"); done
for ((i = 1; i < ${#sz[@]}; i++)); do head+=$(printf ' %14s' "t(${sz[i]})/t(${sz[i - 1]})"); done
echo "$head"
for cmd in "${commands[@]}"; do
    for tool in layerstore containers-storage; do
        line=$(printf '%-48s %-18s' "$(label "$cmd")" "$tool")
        t=()
        for n in "${sz[@]}"; do
            t+=("$(median "$n" "$cmd" "$tool" 5)")
            line+=$(printf ' %10s' "$(secs3 "${t[-1]}")")
        done
        for ((i = 1; i < ${#sz[@]}; i++)); do line+=$(printf ' %14s' "$(ratio "${t[i]}" "${t[i - 1]}")"); done
        echo "$line"
    done
done
