set -uo pipefail
source /tmp/autons/lib.sh
OUT=/tmp/autons/cliout
new_store cli
E=$WORK/empty
mk v1 "$E" --userns=auto --uidmap 0:600000:1000 "$SMALL" true
mk v2 "$E" --userns=auto:size=abc "$SMALL" true
mk v3 "$E" --userns=auto:foo=1 "$SMALL" true
mk v4 "$E" --userns=auto:size "$SMALL" true
mk v5 "$E" --userns=auto:uidmapping=0:1000000 "$SMALL" true
cleanup_store
