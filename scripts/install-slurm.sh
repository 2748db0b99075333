#!/usr/bin/env bash
# Debian's single-node SLURM for tests/test_slurm.py, installed only if missing (needs root or sudo).
set -euo pipefail
missing=""
for b in munged slurmctld slurmd sbatch srun squeue scancel; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$b" >/dev/null 2>&1 || missing="$missing $b"
done
if [ -n "$missing" ]; then
    echo "installing SLURM (missing:$missing)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq munge slurmctld slurmd slurm-client
fi
