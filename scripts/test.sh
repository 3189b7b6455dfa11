#!/usr/bin/env bash
# Runs every test of the workspace on a fresh Debian machine: installs Mesa's lavapipe
# (Vulkan on the CPU, so the WGPU tests run the real CubeCL kernels without a GPU), then
# `cargo test` over the whole workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    echo "installing Mesa lavapipe (mesa-vulkan-drivers) for the WGPU tests"
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
# Without a session bus some Mesa builds warn on every start; harmless, keep logs short.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# The default features (wgpu, ndarray) leave CUDA out: it cannot run without an NVIDIA
# GPU; it is built with `--features cuda` and checked on the H200 (scripts/device.sh).
# Integration tests, examples and benches (the last two built, so they keep compiling);
# `--all-targets` also built an empty unit-test harness of every library and binary (none
# has unit tests: `test = false`).
cargo test --workspace --tests --examples --benches "$@"
cargo test --workspace --doc
