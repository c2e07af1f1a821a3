#!/bin/bash
# build the two rootfs tars (reproducible), plus text descriptions
set -euo pipefail
EPOCH=1700000000
W=/tmp/autons/images
rm -rf "$W"; mkdir -p "$W"
mkroot() { # dir with-big(0/1)
    local d=$1
    mkdir -p "$d"/{bin,etc,root,tmp}
    cp /bin/busybox "$d/bin/busybox"
    for a in sh cat id ls stat; do ln -s busybox "$d/bin/$a"; done
    cat >"$d/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1500:1500:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
    cat >"$d/etc/group" <<'P'
root:x:0:
app:x:1500:
bigg:x:2500:
nogroup:x:65534:
P
    if [ "$2" = 1 ]; then
        mkdir -p "$d/data"; echo 'owned by 70000:70001' >"$d/data/big"
        chown 70000:70001 "$d/data/big"
    fi
    chmod 0700 "$d/root"; chmod 1777 "$d/tmp"
    find "$d" -exec touch -h -d "@$EPOCH" {} +
}
mkroot "$W/big-rootfs" 1
mkroot "$W/small-rootfs" 0
for n in big small; do
    tar --sort=name --format=gnu --numeric-owner --mtime="@$EPOCH" -C "$W/$n-rootfs" -cf "$W/$n.tar" .
done
