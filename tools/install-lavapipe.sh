#!/usr/bin/env bash
# Installs Mesa's lavapipe (a Vulkan driver on the CPU) so wgpu finds an adapter on machines
# without a GPU (Debian/Ubuntu; run as root or with sudo). Also installs iproute2, which the
# multi-peer tests use to set up their network namespaces.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 iproute2 util-linux >/dev/null
