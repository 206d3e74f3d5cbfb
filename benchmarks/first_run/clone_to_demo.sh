#!/bin/bash
# From `git clone` to the demo's summary on a cold cache, as a new user on a
# stock Debian 12 gets it: Debian's own (externally managed) python3 first on
# PATH, a fresh HOME (no pip cache, no Maven repository, no jars, no stack),
# pip's cache off. Run as root with no local stack running (its ports are fixed).
#
#   benchmarks/first_run/clone_to_demo.sh [REPO] [WORKDIR]
#
# Prints `rc=N seconds=S`; make demo's output is in WORKDIR/demo.log.
set -u
REPO=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
WORK=${2:-$(mktemp -d /tmp/thermowatch-first-run.XXXXXX)}
mkdir -p "$WORK/home"
start=$(date +%s.%N)
env -i HOME="$WORK/home" PATH=/usr/bin:/bin PIP_NO_CACHE_DIR=1 TERM=dumb \
    bash -c 'git clone -q "$1" "$2/checkout" && cd "$2/checkout" && make demo' \
    _ "$REPO" "$WORK" > "$WORK/demo.log" 2>&1
rc=$?
end=$(date +%s.%N)
echo "rc=$rc seconds=$(python3 -c "print(round($end - $start, 1))")"
echo "stop its stack: cd $WORK/checkout && env -i HOME=$WORK/home PATH=/usr/bin:/bin make demo-down"
