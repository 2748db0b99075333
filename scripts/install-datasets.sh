#!/usr/bin/env bash
# Debian's Fashion-MNIST (idx files in /usr/share/datasets/fashion-mnist) for the worked example
# in examples/ and its tests; installed only if missing (needs root or sudo).
set -euo pipefail
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "installing dataset-fashion-mnist"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi
