#!/bin/bash
# Run under: flock /run/layerstore-test-subid.lock bash /tmp/autons/run.sh
set -uo pipefail
source /tmp/autons/lib.sh
BK=$WORK/backup
mkdir -p "$BK" "$WORK/empty" "$WORK/cwd-group/etc"
printf 'bigg:x:2500:\n' >"$WORK/cwd-group/etc/group"
cp -p /etc/subuid "$BK/subuid"; cp -p /etc/subgid "$BK/subgid"
restore() {
    cp -p "$BK/subuid" /etc/subuid; cp -p "$BK/subgid" /etc/subgid
    if cmp "$BK/subuid" /etc/subuid && cmp "$BK/subgid" /etc/subgid; then
        echo "subuid/subgid restored OK" >&2
    else
        echo "SUBID RESTORE FAILED" >&2
    fi
}
trap restore EXIT
trap 'exit 130' INT TERM HUP
E=$WORK/empty
date -u +%Y-%m-%dT%H:%M:%SZ >"$WORK/date.txt"

# ---------------- scenario 1
set_subid 'containers:300000:200000\n' 'containers:300000:200000\n'
new_store scenario1
mk c1 "$E" --userns=auto "$BIG" "${CMD[@]}"
mk c2 "$E" --userns=auto "$SMALL" "${CMD[@]}"
mk c3 "$E" --userns=auto:size=5000 "$SMALL" "${CMD[@]}"
mk c4 "$E" --userns=auto:uidmapping=0:1000000:1,gidmapping=0:1000000:1 "$SMALL" "${CMD[@]}"
mk c4b "$E" --userns=auto:size=3000,uidmapping=500:2000000:10 "$SMALL" "${CMD[@]}"
mk c4c "$E" --userns=auto:size=3000,uidmapping=500:100:10 "$SMALL" "${CMD[@]}"
# next free auto uid/gid: an additional mapping adjacent to it with an inverted container order
NU=$(jq '[.[] | .uidmap[]? | select(.host_id >= 300000 and .host_id < 500000) | .host_id + .size] | max' "$G/overlay-containers/containers.json")
NG=$(jq '[.[] | .gidmap[]? | select(.host_id >= 300000 and .host_id < 500000) | .host_id + .size] | max' "$G/overlay-containers/containers.json")
echo "next free uid $NU gid $NG" >&2
mk c4d "$E" --userns=auto:size=10,uidmapping=0:$((NU + 5)):5,gidmapping=0:$((NG + 5)):5 "$SMALL" "${CMD[@]}"
mk c5 "$E" --user 4000:4001 --userns=auto "$SMALL" "${CMD[@]}"
mk c6 "$E" --uidmap 0:600000:1000 --gidmap 0:600000:1000 "$SMALL" "${CMD[@]}"
# explicit map placed exactly where the next auto range would start
NEXT=$(jq '[.[] | .uidmap[]? | select(.host_id >= 300000 and .host_id < 500000) | .host_id + .size] | max' "$G/overlay-containers/containers.json")
echo "next free uid start: $NEXT" >&2
mk c6b "$E" --uidmap 0:$NEXT:500 --gidmap 0:$NEXT:500 "$SMALL" "${CMD[@]}"
mk c7 "$E" --userns=auto:size=1000 "$SMALL" "${CMD[@]}"
mk c1big "$E" --userns=auto:size=70002 "$BIG" "${CMD[@]}"
for c in c2 c4 c4b c4d c6 c7 c1big; do startc $c; done
save_store
cleanup_store

# ---------------- scenario 2
set_subid 'containers:900000:100000\ncontainers:300000:3000\n' 'containers:400000:50000\n'
new_store scenario2
mk a1 "$E" --userns=auto:size=2048 "$SMALL" "${CMD[@]}"
mk a2 "$E" --userns=auto:size=2048 "$SMALL" "${CMD[@]}"
mk a3 "$E" --userns=auto:size=99000 "$SMALL" "${CMD[@]}"
mk a4 "$E" --userns=auto:size=46000 "$SMALL" "${CMD[@]}"
mk a5 "$E" --userns=auto:size=45904 "$SMALL" "${CMD[@]}"
mk a6 "$E" --userns=auto "$SMALL" "${CMD[@]}"
for c in a1 a2 a5; do startc $c; done
save_store
# missing entries (same store; appended to create-log.txt)
set_subid 'lsgc:100000:65536\n' 'lsgc:100000:65536\n'
cp /etc/subuid "$SC/subuid-missing-both"; cp /etc/subgid "$SC/subgid-missing-both"
mk m1 "$E" --userns=auto "$SMALL" "${CMD[@]}"
mk m1s "$E" --userns=auto:size=10 "$SMALL" "${CMD[@]}"
set_subid 'containers:300000:200000\n' 'lsgc:100000:65536\n'
cp /etc/subuid "$SC/subuid-missing-gid"; cp /etc/subgid "$SC/subgid-missing-gid"
mk m2 "$E" --userns=auto:size=10 "$SMALL" "${CMD[@]}"
cp "$G/overlay-containers/containers.json" "$WORK/s2-after-missing.json"
cleanup_store

# ---------------- scenario 3
set_subid 'containers:300000:200000\notheruser:700000:100000\n' 'containers:300000:200000\notheruser:700000:100000\n'
new_store scenario3/min2000-max60000
cat >"$SC/storage.conf" <<EOC
[storage]
driver = "overlay"
graphroot = "$G"
runroot = "$R"

[storage.options]
auto-userns-min-size = 2000
auto-userns-max-size = 60000
EOC
export CONTAINERS_STORAGE_CONF=$SC/storage.conf
mk b1 "$E" --userns=auto "$SMALL" "${CMD[@]}"
mk b2 "$E" --userns=auto "$BIG" "${CMD[@]}"
mk b3 "$E" --userns=auto:size=70002 "$BIG" "${CMD[@]}"
mk b4 "$E" --user 2500 --userns=auto "$SMALL" "${CMD[@]}"
mk b5 "$E" --user 61000 --userns=auto "$SMALL" "${CMD[@]}"
save_store
cleanup_store

new_store scenario3/max100000
cat >"$SC/storage.conf" <<EOC
[storage]
driver = "overlay"
graphroot = "$G"
runroot = "$R"

[storage.options]
auto-userns-max-size = 100000
EOC
export CONTAINERS_STORAGE_CONF=$SC/storage.conf
mk b6 "$E" --userns=auto "$BIG" "${CMD[@]}"
mk b6s "$E" --userns=auto "$SMALL" "${CMD[@]}"
startc b6
save_store
cleanup_store

new_store scenario3/otheruser
cat >"$SC/storage.conf" <<EOC
[storage]
driver = "overlay"
graphroot = "$G"
runroot = "$R"

[storage.options]
root-auto-userns-user = "otheruser"
EOC
export CONTAINERS_STORAGE_CONF=$SC/storage.conf
mk b7 "$E" --userns=auto "$SMALL" "${CMD[@]}"
mk b8 "$E" --userns=auto:size=99000 "$SMALL" "${CMD[@]}"
mk b9 "$E" --userns=auto:size=98500 "$SMALL" "${CMD[@]}"
startc b7
save_store
cleanup_store
unset CONTAINERS_STORAGE_CONF

# ---------------- scenario 4: podman's cwd decides which etc/group is read
set_subid 'containers:300000:200000\n' 'containers:300000:200000\n'
new_store scenario4-cwd
mk d1 "$E" --userns=auto "$SMALL" "${CMD[@]}"
mk d2 / --userns=auto "$SMALL" "${CMD[@]}"
mk d3 "$WORK/cwd-group" --userns=auto "$SMALL" "${CMD[@]}"
mk d4 "$WORK/images/small-rootfs" --userns=auto "$SMALL" "${CMD[@]}"
save_store
cleanup_store
echo DONE >&2
