#!/usr/bin/env bash
# Multi-node data-parallel training with torchrun's c10d rendezvous.
#
# Run this same script on every node (same arguments). All nodes meet at RDZV_ENDPOINT
# (the address of any one of them and a free port) under the job id RDZV_ID.
#
#   NNODES=2 NPROC_PER_NODE=4 RDZV_ENDPOINT=node0.example.org:29500 \
#       examples/distributed/multinode.sh eplus.h5 /shared/runs/eplus-2x4
#
# The data file and the run directory must be on a file system every node sees.
# See docs/distributed.md.
set -euo pipefail

DATA=${1:?usage: multinode.sh DATA.h5 RUNDIR [extra caloforge train options]}
RUNDIR=${2:?usage: multinode.sh DATA.h5 RUNDIR [extra caloforge train options]}
shift 2

NNODES=${NNODES:-2}                      # or a range such as 1:4 for an elastic job
NPROC_PER_NODE=${NPROC_PER_NODE:-gpu}    # "gpu": one process per visible GPU
RDZV_ENDPOINT=${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port (any node, a free port)}
RDZV_ID=${RDZV_ID:-caloforge-$(basename "$RUNDIR")}
MODEL=${MODEL:-calogan}
CONFIG=${CONFIG:-configs/calogan.yaml}
MAX_RESTARTS=${MAX_RESTARTS:-3}

# one torch thread per process unless told otherwise (CPU-only nodes: set it to
# cores / processes)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

exec torchrun \
    --nnodes="$NNODES" \
    --nproc-per-node="$NPROC_PER_NODE" \
    --rdzv-backend=c10d \
    --rdzv-endpoint="$RDZV_ENDPOINT" \
    --rdzv-id="$RDZV_ID" \
    --max-restarts="$MAX_RESTARTS" \
    -m caloforge train "$MODEL" \
        --data "$DATA" --out "$RUNDIR" --config "$CONFIG" \
        --lr-scaling sqrt -q "$@"
