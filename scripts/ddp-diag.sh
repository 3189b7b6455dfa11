#!/usr/bin/env bash
# Where a multi-GPU DDP run spends its time (on the lent x2 machine, gpu/ carried as for
# `scripts/device.sh train`): TNL-385M on GPUs 0,1, sampled every 45 s into
# $OUT/samples.log: each GPU's utilization and memory, the iterations burn-train's workers
# have logged, and which of the program's threads are running.
#   T=480 N=10 bash scripts/ddp-diag.sh
out=${OUT:-/tmp/out}
mkdir -p "$out"
(TRAIN_DEVICES=0,1 TRAIN_STEPS=400 TRAIN_LOG=1 TRAIN_TIMEOUT=${T:-480} \
    bash scripts/device.sh train > "$out/device.log" 2>&1) &
for i in $(seq 1 "${N:-10}"); do
    sleep 45
    {
        echo "== t=$((i * 45)) s"
        nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
        log=/tmp/run-0,1/experiment.log
        [ -f "$log" ] && echo "iterations logged: $(grep -c Iteration "$log")"
        pid=$(pgrep -f gpu/train_tnl | head -1)
        [ -n "$pid" ] && for t in /proc/"$pid"/task/*; do
            echo "$(cat "$t/comm") $(sed 's/.*) //' "$t/stat" | cut -d' ' -f1)"
        done | sort | uniq -c
    } >> "$out/samples.log" 2>&1
done
wait
cp /tmp/run-0,1/experiment.log "$out/" 2>/dev/null
tail -3 "$out/samples.log"
