#!/usr/bin/env bash
# Installs Mesa's lavapipe (a Vulkan driver on the CPU) so wgpu finds an adapter on machines
# without a GPU (Debian/Ubuntu; run as root or with sudo). Also installs iproute2, which the
# multi-peer tests use to set up their network namespaces, and coturn, their TURN relay.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# coturn: the real TURN relay of the p2p relay test (~10 s, 3 MB; its service is not started).
$SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 iproute2 util-linux coturn >/dev/null
