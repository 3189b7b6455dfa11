#!/usr/bin/env bash
# Where a multi-GPU DDP run spends its time (on the lent x2 machine, gpu/ carried as for
# `scripts/device.sh train`, plus gpu/dbg.tgz: elfutils' eu-stack with its libraries and
# loader, and an unstripped gpu/train_tnl.gz for symbols): TNL-385M on GPUs 0,1, every step
# logged, NCCL's log (init, each collective and point-to-point call) in $OUT/nccl.*.log,
# sampled every 30 s into $OUT/samples.log: each GPU's utilization and memory, the
# iterations burn-train's workers have logged, each thread's name, state and kernel wait
# channel; every thread's stack into $OUT/stack-<t>.txt at the times in STACKS.
#   T=300 N=10 STACKS="180 270" bash scripts/ddp-diag.sh
out=${OUT:-/tmp/out}
mkdir -p "$out"
export NCCL_DEBUG=${NCCL_DEBUG:-INFO} NCCL_DEBUG_SUBSYS=${NCCL_DEBUG_SUBSYS:-INIT,COLL,P2P}
export NCCL_DEBUG_FILE="$out/nccl.%p.log"
[ -f gpu/dbg.tgz ] && tar xzf gpu/dbg.tgz -C /tmp
stack() { /tmp/dbg/ld-linux-x86-64.so.2 --library-path /tmp/dbg /tmp/dbg/eu-stack -p "$1"; }
(TRAIN_DEVICES=${DEVICES:-0,1} TRAIN_STEPS=400 TRAIN_LOG=1 TRAIN_TIMEOUT=${T:-300} \
    bash scripts/device.sh train > "$out/device.log" 2>&1) &
run=/tmp/run-${DEVICES:-0,1}
for i in $(seq 1 "${N:-10}"); do
    sleep 30
    t=$((i * 30))
    pid=$(pgrep -x train_tnl | head -1)
    {
        echo "== t=$t s"
        nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
        [ -f "$run/experiment.log" ] && echo "iterations logged: $(grep -c Iteration "$run/experiment.log")"
        [ -n "$pid" ] && for task in /proc/"$pid"/task/*; do
            echo "$(cat "$task/comm") $(sed 's/.*) //' "$task/stat" | cut -d' ' -f1) $(cat "$task/wchan" 2>/dev/null)"
        done | sort | uniq -c
    } >> "$out/samples.log" 2>&1
    case " ${STACKS:-180 270} " in *" $t "*) [ -n "$pid" ] && stack "$pid" > "$out/stack-$t.txt" 2>&1 ;; esac
done
wait
cp "$run/experiment.log" "$out/" 2>/dev/null
tail -3 "$out/samples.log"
