# helpers sourced by run.sh
export CONTAINERS_CONF=/work/main/testdata/containers.conf
readonly EPOCH=1700000000
OUT=/work/main/testdata/podman-4.3.1/auto-userns
WORK=/tmp/autons
SMALL=localhost/autons-small:latest
BIG=localhost/autons-big:latest
CMD=(cat /proc/self/uid_map /proc/self/gid_map)

pod() {
    podman --root "$G" --runroot "$R" --storage-driver overlay --tmpdir "$R/libpod-tmp" "$@"
}

log() { printf '\n=== %s\n' "$*" >&2; }

set_subid() { # subuid-content subgid-content
    printf '%b' "$1" >/etc/subuid
    printf '%b' "$2" >/etc/subgid
}

# new_store DIR-IN-OUT : fresh G/R, images imported, subid files snapshot
new_store() {
    SC=$OUT/$1
    ST=$WORK/s/$(echo "$1" | sed 's/scenario/s/; s|/|-|g' | cut -c1-12)
    G=$ST/graphroot; R=$ST/runroot
    [ ! -e "$ST" ] || { echo "store $ST exists" >&2; exit 1; }
    mkdir -p "$SC" "$G" "$R"
    : >"$SC/.flags.tsv"
    cp /etc/subuid "$SC/subuid"; cp /etc/subgid "$SC/subgid"
    log "store $ST for $1"
    pod import --quiet --change 'CMD ["/bin/sh"]' "$WORK/images/big.tar" "$BIG" >"$SC/.import-big.txt"
    pod import --quiet --change 'CMD ["/bin/sh"]' "$WORK/images/small.tar" "$SMALL" >"$SC/.import-small.txt"
}

# mk NAME CWD podman-create-args... ; records rc + stderr
mk() {
    local name=$1 cwd=$2; shift 2
    local rc=0
    ( cd "$cwd" && pod create --pull=never --name "$name" "$@" ) >"$WORK/out.txt" 2>"$WORK/err.txt" || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$cwd" "$*" >>"$SC/.flags.tsv"
    {
        printf '## %s (cwd %s)\n$ podman create --pull=never --name %s %s\n' "$name" "$cwd" "$name" "$*"
        printf 'exit code: %s\n' "$rc"
        [ $rc -eq 0 ] && printf 'stdout: %s\n' "$(cat "$WORK/out.txt")"
        printf 'stderr:\n'; cat "$WORK/err.txt"; printf '\n'
    } >>"$SC/create-log.txt"
    echo "$name rc=$rc $(head -c 300 "$WORK/err.txt")" >&2
    return 0
}

startc() { # NAME
    local rc=0
    pod start -a "$1" >"$WORK/out.txt" 2>"$WORK/err.txt" || rc=$?
    {
        printf '## podman start -a %s\nexit code: %s\nstdout:\n' "$1" "$rc"; cat "$WORK/out.txt"
        printf 'stderr:\n'; cat "$WORK/err.txt"; printf '\n'
    } >>"$SC/start.txt"
    echo "start $1 rc=$rc" >&2
}

save_store() {
    cp "$G/overlay-containers/containers.json" "$SC/containers.json"
    cp "$G/overlay-layers/layers.json" "$SC/layers.json"
    cp "$G/overlay-images/images.json" "$SC/images.json"
    chmod 0644 "$SC"/*.json
    { echo "# ls -la R/overlay (feature cache files) and G/overlay"; ls -la "$R/overlay"; echo; ls -la "$G/overlay"; } >"$SC/overlay-listing.txt"
    pod inspect $(pod ps -a --format '{{.Names}}') 2>/dev/null |
        jq '[.[] | {Name, Id, UsernsMode: .HostConfig.UsernsMode, IDMappings: .HostConfig.IDMappings}]' >"$SC/inspect.json" || true
}

cleanup_store() {
    pod rm -af >/dev/null 2>&1 || true
    /work/main/testdata/cleanup-store.sh "$G" "$R" || { echo "cleanup of $ST failed" >&2; exit 1; }
    rmdir "$ST" 2>/dev/null || true
}
