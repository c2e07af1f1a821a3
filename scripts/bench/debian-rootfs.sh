#!/usr/bin/env bash
# Build (once) and cache a Debian bookworm minbase rootfs tarball, the
# realistic image of the benchmarks and end-to-end tests (about 6,800
# entries, 200 MB uncompressed). Needs root; takes a minute or a few.
#
#   scripts/bench/debian-rootfs.sh [OUT.tar]
#
# Default OUT: ${LAYERSTORE_CACHE:-$HOME/.cache/layerstore}/debian-minbase.tar
# If OUT exists its path is printed and nothing else happens. stdout is only
# the path (so `tar=$(scripts/bench/debian-rootfs.sh)` works); progress and
# the entry count / size go to stderr.
#
# The Debian mirror is read from apt's configuration at run time
# (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list and *.sources): the
# first http(s) URI serving the bookworm suite whose Release file can be
# fetched. No host is hard-coded. Override with DEBIAN_MIRROR=URL.
set -euo pipefail

suite=bookworm
out=${1:-${LAYERSTORE_CACHE:-$HOME/.cache/layerstore}/debian-minbase.tar}
out=$(realpath -m -- "$out")

say() { echo "debian-rootfs: $*" >&2; }
die() { say "$*"; exit 1; }

stats() {
    say "$1: $(tar -tf "$1" | wc -l) entries, $(stat -c %s "$1") bytes ($(du -h "$1" | cut -f1))"
}

if [ -s "$out" ]; then echo "$out"; exit 0; fi
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap)"

mkdir -p "$(dirname "$out")"
# Two callers at once (tests and benches of several engineers): one builds,
# the other waits and then finds the tarball.
exec 9>"$out.lock"
flock 9
if [ -s "$out" ]; then echo "$out"; exit 0; fi

if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# --- the mirror apt uses -----------------------------------------------------
# Prints "URI SUITE" for every enabled deb source, one-line and deb822 formats.
apt_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [opt=val ...] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822: comment lines are dropped (they do not end a stanza).
        sed -e '/^[[:space:]]*#/d' "$f" | awk '
            function flush(   i, j, nu, ns, u, s) {
                if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
                    nu = split(uris, u, " "); ns = split(suites, s, " ")
                    for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
                }
                types = uris = suites = enabled = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^[A-Za-z-]+:/ {
                key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
                if (key == "types") types = $0
                else if (key == "uris") uris = $0
                else if (key == "suites") suites = $0
                else if (key == "enabled") enabled = $0
                last = key; next
            }
            /^[ \t]/ { sub(/^[ \t]+/, ""); if (last == "uris") uris = uris " " $0 }
            END { flush() }'
    done
}

candidates() {
    [ -z "${DEBIAN_MIRROR:-}" ] || { echo "$DEBIAN_MIRROR"; return; }
    # Sources that serve the suite itself first (not -security/-updates), then
    # any other URI that looks like a Debian archive.
    {
        apt_sources | awk -v s="$suite" '$2 == s { print $1 }'
        apt_sources | awk '$1 ~ /\/debian\/?$/ { print $1 }'
    } | grep -E '^https?://' | awk '!seen[$0]++'
}

fetch_ok() { # URL
    if command -v wget >/dev/null; then
        wget -q -O /dev/null --timeout=20 --tries=1 "$1"
    elif command -v curl >/dev/null; then
        curl -fsS -o /dev/null --max-time 20 "$1"
    else
        return 0 # nothing to check with; debootstrap will tell
    fi
}

mirror=
while IFS= read -r m; do
    m=${m%/}
    if fetch_ok "$m/dists/$suite/Release"; then mirror=$m; break; fi
    say "mirror $m: cannot fetch dists/$suite/Release, trying the next"
done < <(candidates)
[ -n "$mirror" ] || die "no working Debian mirror in apt's sources (set DEBIAN_MIRROR=URL)"
say "mirror: $mirror"

# --- debootstrap -------------------------------------------------------------
# Build next to OUT (same file system), never in a shared /tmp.
work=$(mktemp -d "$out.build.XXXXXX")
cleanup() {
    # debootstrap mounts proc/sys inside the target; a failed run can leave
    # them there, and rm -rf must not walk into them.
    local mp
    awk '{print $5}' /proc/self/mountinfo | while IFS= read -r mp; do
        mp=$(printf '%b' "$mp")
        case "$mp" in "$work"/*) printf '%s\n' "$mp" ;; esac
    done | sort -r | while IFS= read -r mp; do
        umount -- "$mp" 2>/dev/null || umount -l -- "$mp" 2>/dev/null || true
    done
    rm -rf --one-file-system -- "$work" "$out.tmp"
}
trap cleanup EXIT

say "debootstrap --variant=minbase $suite (a minute or a few; log: $work/debootstrap.log)"
start=$(date +%s)
if ! debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [ ! -f "$work/rootfs/debootstrap/debootstrap.log" ] || tail -n 30 "$work/rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
fi
say "debootstrap done in $(( $(date +%s) - start )) s"

# Sorted names, numeric owners and xattrs (file capabilities): the same
# rootfs always gives the same member order.
tar --numeric-owner --xattrs --sort=name -C "$work/rootfs" -cf "$out.tmp" .
mv -- "$out.tmp" "$out"
stats "$out"
echo "$out"
