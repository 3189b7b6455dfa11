#!/usr/bin/env bash
# One call on the lent H200 (see ../shared/docs/gpu-device.md): correctness of every
# backend and dtype against the float64 definition, with CubeCL's bounds validation on,
# then the speed sweep. Binaries are built here and carried in gpu/; Vulkan's loader in .gl/:
#   cargo build --release --features cuda --bin check --bin sweep
#   mkdir -p gpu && cp target/release/{check,sweep} gpu/ && strip gpu/* && gzip -9 gpu/*
# then, on the device (carry gpu and .gl):
#   scripts/device.sh check|sweep|all [sweep args...]
set -uo pipefail
root=$(pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
for f in gpu/*.gz; do gunzip -f "$f"; done; chmod +x gpu/*
for f in .gl/*.deb; do dpkg -x "$f" /; done
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
