#!/usr/bin/env bash
# A/B of sweep binaries on the device, alternated twice in one call so all see the same GPU
# and clocks (METHOD.md): `scripts/ab.sh gpu/sweep-old gpu/sweep [more binaries] [sweep
# args]`, e.g. `--dtype bf16 --shape 4,32,4096`. Logs under $OUT; the medians are printed
# last.
set -uo pipefail
bins=()
while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do
    bins+=("$1")
    shift
done
out=${OUT:-/tmp/out}
mkdir -p "$out"
for round in 1 2; do
    for bin in "${bins[@]}"; do
        name=$(basename "$bin")-$round
        "$bin" --backend cuda --impls lightning --out "$out/$name" "$@" > "$out/$name.log" 2>&1
        echo "$name exit $?"
    done
done
for round in 1 2; do
    for bin in "${bins[@]}"; do
        name=$(basename "$bin")-$round
        sed -n '/^summary/,$p' "$out/$name.log" | grep lightning | sed "s/^/$name /" \
            | awk '{print $1, $5, $6, $7, "fwd", $9, "fwd+bwd", $17}'
    done
done
