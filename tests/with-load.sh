#!/usr/bin/env bash
# Runs a command while N busy loops load the machine's cores; the loops end with the command.
# Usage: tests/with-load.sh N command [args...]   Exit status: the command's.
set -u
loops=$1; shift
pids=()
for _ in $(seq 1 "$loops"); do
  ( while :; do :; done ) &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
echo "with-load: $loops busy loops running (pids ${pids[*]})"
start=$(date +%s)
"$@"
rc=$?
echo "with-load: '$*' exited $rc after $(( $(date +%s) - start )) s under load"
exit $rc
