#!/usr/bin/env bash
# CUDA check of every model family on one GPU, through the command line a user types:
# each family trains a few steps with its shipped config on --device cuda, resumes, and
# generates; bf16 autocast and torch.compile train (fp16 is refused with a clear message);
# torchrun trains with NCCL on cuda:LOCAL_RANK; the pretrained models generate on the GPU with the
# same response as on the CPU; the evaluation's classifier runs on the GPU; `caloforge bench`
# times the pretrained models on the GPU.
#
#   benchmarks/cuda_check.sh [WORKDIR]      (needs a CUDA GPU; 8 minutes on an H200)
#   DEVICE=cpu N=500 BATCHES=1,100 benchmarks/cuda_check.sh   (a dry run of the script itself)
#
# Each check prints PASS or FAIL with its wall time; a failing check prints the end of its
# log (all logs stay in WORKDIR). The exit status is the number of failed checks.
set -u
case "${1:-}" in -h|--help) sed -n '2,15p' "$0"; exit 0 ;; esac
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-cuda_check}
mkdir -p "$work" && cd "$work" || exit 1
failed=0
dev=${DEVICE:-cuda}
n=${N:-20000}
batches=${BATCHES:-1,100,10000,100000}
export dev n

check() {  # check NAME COMMAND...: run COMMAND, log to NAME.log, report PASS/FAIL
    local name=$1; shift
    local t0=$SECONDS
    if "$@" > "$name.log" 2>&1; then
        echo "PASS $name ($((SECONDS - t0)) s)"
    else
        echo "FAIL $name ($((SECONDS - t0)) s)"; tail -n 25 "$name.log"; failed=$((failed + 1))
    fi
}

short() {  # short CONFIG OUT KEY=VALUE...: a copy of CONFIG with model keys replaced
    python - "$@" <<'EOF'
import sys, yaml
src, dst, *pairs = sys.argv[1:]
cfg = yaml.safe_load(open(src))
for pair in pairs:
    key, value = pair.split("=", 1)
    cfg["model"][key] = yaml.safe_load(value)
yaml.safe_dump(cfg, open(dst, "w"))
EOF
}

if [ "$dev" != cpu ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
    python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" 2>/dev/null ||
        { echo "error: torch sees no CUDA device (DEVICE=cpu makes a dry run)"; exit 1; }
fi
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.is_available() and torch.cuda.get_device_name(0))" || exit 1

cfg=$here/configs
check simulate bash -c "
caloforge simulate -g calogan --particle eplus -n 4096 --seed 1 -o calogan.h5 -q &&
caloforge simulate -g atlas89 --particle gamma -n 4096 --seed 1 -o atlas89.h5 -q &&
caloforge simulate -g clic51 --particle eminus -n 256 --energy 100:200 --seed 1 -o clic51.h5 -q"

short "$cfg/caloflow.yaml" caloflow.yaml flow1_steps=20 teacher_steps=20 student_steps=20
for run in "calogan calogan.h5 $cfg/calogan.yaml 20" \
           "caloflow calogan.h5 caloflow.yaml 40" \
           "coupling-flow calogan.h5 $cfg/coupling-flow_calogan.yaml 50" \
           "wgan atlas89.h5 $cfg/wgan_atlas89.yaml 50" \
           "3dgan clic51.h5 $cfg/3dgan_clic51.yaml 10"; do
    set -- $run
    family=$1 data=$2 config=$3 steps=$4
    check "train-$family" caloforge train "$family" --data "$data" --out "run-$family" \
        --config "$config" --max-steps "$steps" --checkpoint-every "$((steps / 2))" \
        --device $dev -q
    check "resume-$family" caloforge train "$family" --out "run-$family" --resume \
        --max-steps "$((steps + 10))" --device $dev -q
    check "generate-$family" caloforge generate "run-$family" -n 2000 --seed 3 \
        --device $dev -o "gen-$family.h5" -q
done
check train-caloflow-all caloforge train caloflow --data calogan.h5 --out run-caloflow-all \
    --config caloflow.yaml --stage all --device $dev -q
check generate-caloflow-teacher caloforge generate run-caloflow-all --sampler teacher \
    -n 500 --seed 3 --device $dev -o gen-caloflow-teacher.h5 -q

check train-coupling-flow-bf16 caloforge train coupling-flow --data calogan.h5 \
    --out run-cpf-bf16 --config "$cfg/coupling-flow_calogan.yaml" --max-steps 30 \
    --precision bf16 --device $dev -q
# no family routes its backward passes through a gradient scaler yet: fp16 must be refused
# with one clear line, not train with underflowing gradients
[ "$dev" = cpu ] || check fp16-refused bash -c "
! caloforge train calogan --data calogan.h5 --out run-gan-fp16 --config $cfg/calogan.yaml \
    --max-steps 10 --precision fp16 --device $dev -q 2> fp16.err && cat fp16.err &&
grep -q 'use --precision bf16' fp16.err"
check train-coupling-flow-compile caloforge train coupling-flow --data calogan.h5 \
    --out run-cpf-compile --config "$cfg/coupling-flow_calogan.yaml" --max-steps 20 \
    --compile --device $dev -q
check torchrun-nccl torchrun --nproc-per-node 1 --standalone -m caloforge train \
    coupling-flow --data calogan.h5 --out run-cpf-ddp \
    --config "$cfg/coupling-flow_calogan.yaml" --max-steps 30 --device $dev -q

# the pretrained models on the GPU: same response per energy bin as on the CPU
check pretrained-cuda-vs-cpu bash -c '
for name in calogan-eplus calogan-piplus atlas89-gamma atlas89-gamma-wgan; do
    caloforge generate $name -n $n --seed 5 --device $dev -o $name-cuda.h5 -q &&
    caloforge generate $name -n $n --seed 6 --device cpu -o $name-cpu.h5 -q || exit 1
done
python - <<EOF
import numpy as np
from caloforge.data import read_showers
worst = 0.0
for name in ("calogan-eplus", "calogan-piplus", "atlas89-gamma", "atlas89-gamma-wgan"):
    a, b = (read_showers(f"{name}-{d}.h5") for d in ("cuda", "cpu"))
    ra, rb = (s.total_energy() / s.incident_energy for s in (a, b))
    err = np.hypot(ra.std() / np.sqrt(len(ra)), rb.std() / np.sqrt(len(rb)))
    pull = (ra.mean() - rb.mean()) / err
    print(f"{name}: E_tot/E_inc cuda {ra.mean():.5f} +- {ra.std():.5f}, "
          f"cpu {rb.mean():.5f} +- {rb.std():.5f}, pull {pull:+.2f}")
    worst = max(worst, abs(pull))
assert worst < 4, worst
EOF'
check evaluate-cuda bash -c "
caloforge simulate --particle eplus -n $n --seed 13 -o ref-eplus.h5 -q &&
caloforge evaluate ref-eplus.h5 calogan-eplus-cuda.h5 -o eval-cuda --device $dev --no-plots -q &&
python -c \"import json; m = json.load(open('eval-cuda/metrics.json')); print({k: round(v['auc'], 4) for k, v in m['classifier'].items()})\""
check bench-cuda caloforge bench calogan-eplus calogan-gamma calogan-piplus atlas89-gamma \
    atlas89-gamma-wgan run-calogan run-caloflow-all:student --device $dev \
    --batch-sizes $batches --repeats 3 --max-seconds 30 --json bench-cuda.json
cat bench-cuda.log
echo "$failed failed"
exit "$failed"
