#!/usr/bin/env bash
# One GPU session in one call (~8 min): what only a GPU shows, for docs/benchmarks.md ("GPU").
#
#   bash bench/gpu_session.sh                               # on the device machine (docs/benchmarks.md)
#   GPU_SESSION_DRY=1 OUT=/tmp/gs PYTHON=.venv/bin/python bash bench/gpu_session.sh   # CPU check
#
# Parts, most valuable first, each under its own `timeout` (a failed or killed part is recorded and
# the next one runs; a part that no longer fits the overall budget is skipped and says so):
#   card       nvidia-smi, torch / CUDA / cuDNN / NCCL versions
#   r101, b4   bench/gpu_throughput.py on the real CAM recipes at 640 px: training steps of the loop
#              (Puzzle-CAM, AMP fp16 + GradScaler, channels_last, recipe batch) and bf16; CAM TTA
#              inference per 2048 px image (3 scales x 4 flips)
#   cell       the same for the cell recipe (224 px crops): training and predict_crops, crops/s
#   ddp        torchrun (1 process) train_cam.py, tiny recipe on CUDA, nccl, AMP; checkpoint loads
#   ddp_r101   bench/gpu_throughput.py --ddp under torchrun: the R101 step inside DDP on nccl
#   e2e        train_cam.py with the R101 recipe on synthetic 640 px images, loader included (8 workers)
#   cell_bench bench/cell_model.py --device cuda (cut + train + predict, text output)
#   summary    table rows and utilisation (util.csv, sampled every 0.5 s) per part
# Results: $OUT/gpu.jsonl (JSON lines), $OUT/util.csv, $OUT/log.txt (everything printed).
# GPU_SESSION_DRY=1 runs every part's code path on CPU with tiny recipes, gloo and 1-2 steps.
# GPU_SESSION_PARTS="e2e cell_bench" runs only those parts (a rerun of what a first call missed);
# wheels, card and summary always run. GPU_SESSION_BUDGET (seconds, default 470) caps all parts.
set -uo pipefail  # no -e: one part's failure must not stop the others
cd "$(dirname "$0")/.."

set -a  # every variable below is exported: the parts run in child shells under `timeout`
PYTHONUNBUFFERED=1
DRY=${GPU_SESSION_DRY:-0}
OUT=${OUT:-$PWD/gpu-session-out}
PYTHON=${PYTHON:-python3}
PARTS=${GPU_SESSION_PARTS:-}
BUDGET=${GPU_SESSION_BUDGET:-470}  # seconds for all parts; the run tool's timeout_s adds a margin
WORK=${GPU_SESSION_WORK:-$(mktemp -d /tmp/gpu-session.XXXXXX)}
JSON=$OUT/gpu.jsonl
UTIL=$OUT/util.csv
STARTED=$(date +%s)
DEADLINE=$(( STARTED + BUDGET ))
if [[ $DRY == 1 ]]; then
  DEVICE=cpu BACKEND=gloo AMP_ON=false WORKERS=1 LOADER_WORKERS=2
  R101=configs/cam/tiny_cpu.yaml B4=configs/cam/tiny_cpu.yaml CELL=configs/cell/tiny_cpu.yaml
  AMPS="off bf16" DDP_AMP=off
  CAM_ARGS="--image-size 64 --batch-size 2 --steps 1 --warmup 1 --infer-size 128 --infer-images 1 --threads 1"
  CELL_ARGS="--batch-size 4 --steps 1 --warmup 1 --crops 16 --threads 1"
  DDP_ARGS="--image-size 64 --batch-size 2 --steps 1 --warmup 1 --threads 1"
  TINY_SET="--n-images 16 --image-size 64" TINY_TRAIN="data.image_size=32 train.batch_size=4 train.epochs=2" TINY_STEP=4
  E2E_SET="--n-images 8 --image-size 64" E2E_TRAIN="data.image_size=32 train.batch_size=2 train.accumulation=2"
  E2E_STEP=4 CELL_BENCH="--images 2 --size 128 --steps 1 --threads 1" SAMPLE_ARGS=--dry
  PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  DEVICE=cuda BACKEND=nccl AMP_ON=true WORKERS=14 LOADER_WORKERS=8
  R101=configs/cam/resnest101_640.yaml B4=configs/cam/efficientnet_b4_640.yaml CELL=configs/cell/efficientnet_b0_224.yaml
  AMPS="fp16 bf16" DDP_AMP=fp16
  CAM_ARGS="--steps 20 --warmup 3 --infer-images 6"
  CELL_ARGS="--steps 30 --warmup 3 --crops 2048"
  DDP_ARGS="--steps 6 --warmup 2"
  TINY_SET="--n-images 96 --image-size 256" TINY_TRAIN="train.epochs=3" TINY_STEP=16
  E2E_SET="--n-images 192 --image-size 640" E2E_TRAIN=""
  E2E_STEP=24 CELL_BENCH="--images 12 --size 512 --steps 10 --threads 8" SAMPLE_ARGS=""
  PYTHONPATH=/tmp/site:$PWD
fi
set +a

log() { echo "[gpu_session $(date -u +%H:%M:%S) +$(( $(date +%s) - STARTED ))s] $*"; }

mark() {  # mark PART EVENT [RC]: a marker line in the results, so util.csv can be cut per part
  printf '{"bench": "session", "part": "%s", "event": "%s", "t": %s, "rc": %s}\n' \
    "$1" "$2" "$(date +%s.%N)" "${3:-null}" >> "$JSON"
}

part() {  # part NAME SECONDS FUNCTION: run FUNCTION under its own timeout, within the overall budget
  local name=$1 budget=$2 fn=$3 left rc
  if [[ -n $PARTS && ! " $PARTS wheels card summary " =~ " $name " ]]; then log "part $name: not asked for"; return; fi
  left=$(( DEADLINE - $(date +%s) ))
  (( budget > left )) && budget=$left
  if (( budget < 15 )); then
    log "part $name skipped: ${left}s of the budget left"; mark "$name" skipped; FAILED+=" $name(skipped)"; return
  fi
  log "part $name: up to ${budget}s"
  mark "$name" start
  timeout -k 10 "$budget" bash -c "$fn"
  rc=$?
  mark "$name" end "$rc"
  (( rc == 124 || rc == 137 )) && log "part $name stopped at its ${budget}s limit"
  (( rc != 0 )) && FAILED+=" $name(rc=$rc)"
  log "part $name: rc=$rc"
}

# ----------------------------------------------------------------------------- the parts

wheels() {  # the wheels the device image lacks: each manifest line must have its file in .whl/
  local req name missing=0
  while read -r req; do
    name=${req%%==*}; name=${name//-/_}
    if ! compgen -G ".whl/${name}-${req##*==}-*.whl" > /dev/null; then echo "wheel missing: $req"; missing=1; fi
  done < <(grep -v '^#' bench/gpu_wheels.txt | grep .)
  if [[ $DRY != 1 ]] && compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  "$PYTHON" -c "import resnest.torch, efficientnet_pytorch, pycocotools.mask, iterstrat, hpacam.cam.train; print('imports ok')" \
    && return "$missing"
}

card() {
  if [[ $DRY != 1 ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    nvidia-smi
  fi
  echo "cores: $(nproc)"; free -g | head -2; df -h /dev/shm /tmp  # the loader's workers need /dev/shm
  "$PYTHON" bench/gpu_session_tools.py card --json "$JSON"
}

throughput() {  # throughput RECIPE LABEL ARGS...: bench/gpu_throughput.py, JSON lines into the results
  local recipe=$1 label=$2; shift 2
  "$PYTHON" bench/gpu_throughput.py --recipe "$recipe" --device "$DEVICE" --json "$JSON" --label "$label" "$@"
}
r101() { throughput "$R101" resnest101 --amp $AMPS $CAM_ARGS; }
b4() { throughput "$B4" efficientnet_b4 --amp $AMPS $CAM_ARGS; }
cell() { throughput "$CELL" cell_b0 --amp $AMPS $CELL_ARGS; }

synth() {  # synth DIR ARGS...: a synthetic set, as the tests make theirs
  local out=$1; shift
  "$PYTHON" -m hpacam.synth --out "$out" --seed 0 --workers "$WORKERS" --quiet --overwrite "$@" | tail -n 1
}

ddp() {  # train_cam.py under torchrun, one process, on the device with the backend and AMP
  local data=$WORK/synth_tiny run=$WORK/run_ddp
  synth "$data" $TINY_SET || return
  "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 train-cam-model/train_cam.py \
    --config configs/cam/tiny_cpu.yaml run_dir="$run" \
    "data.sources=[{images: $data/images, labels: $data/labels.csv}]" data.fold=-1 \
    train.device="$DEVICE" train.dist_backend="$BACKEND" train.amp="$AMP_ON" train.progress=false $TINY_TRAIN || return
  "$PYTHON" bench/gpu_session_tools.py run-record --run "$run" --part ddp --device "$DEVICE" --json "$JSON" \
    --items-per-step "$TINY_STEP"
}

ddp_r101() {  # the R101 training step wrapped in DDP on the torchrun process group
  "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 bench/gpu_throughput.py --ddp \
    --backend "$BACKEND" --recipe "$R101" --device "$DEVICE" --parts train --amp "$DDP_AMP" \
    --json "$JSON" --label resnest101_ddp $DDP_ARGS
}

e2e() {  # the R101 recipe's own training run, loader included, two epochs of synthetic 640 px images
  local data=$WORK/synth_640 run=$WORK/run_e2e
  synth "$data" $E2E_SET || return
  "$PYTHON" train-cam-model/train_cam.py --config "$R101" run_dir="$run" \
    "data.sources=[{images: $data/images, labels: $data/labels.csv}]" data.fold=-1 \
    model.pretrained_path=null data.num_workers="$LOADER_WORKERS" train.device="$DEVICE" \
    train.epochs=2 train.stop_after_epochs=0 train.progress=false train.log_every=1 $E2E_TRAIN || return
  "$PYTHON" bench/gpu_session_tools.py run-record --run "$run" --part e2e --device "$DEVICE" --json "$JSON" \
    --items-per-step "$E2E_STEP"
}

cell_bench() { "$PYTHON" bench/cell_model.py --recipe "$CELL" --device "$DEVICE" $CELL_BENCH; }

export -f wheels card throughput r101 b4 cell synth ddp ddp_r101 e2e cell_bench

# ----------------------------------------------------------------------------- the session

main() {
  FAILED=""
  log "out $OUT, work $WORK, budget ${BUDGET}s, dry=$DRY, python $PYTHON"
  part wheels 30 wheels
  "$PYTHON" bench/gpu_session_tools.py sample --out "$UTIL" --interval 0.5 --limit-s $(( BUDGET + 60 )) $SAMPLE_ARGS &
  local sampler=$!
  part card 20 card
  part r101 100 r101
  part b4 100 b4
  part cell 45 cell
  part ddp 50 ddp
  part ddp_r101 40 ddp_r101
  part e2e 85 e2e
  part cell_bench 45 cell_bench
  kill "$sampler" 2> /dev/null
  wait "$sampler" 2> /dev/null
  DEADLINE=$(( DEADLINE + 30 ))  # the summary always runs
  part summary 30 "\"\$PYTHON\" bench/gpu_session_tools.py summary --json \"\$JSON\" --util \"\$UTIL\""
  log "done; failed or skipped:${FAILED:- none}"
  [[ -z $FAILED ]]
}

mkdir -p "$OUT" "$WORK"
main 2>&1 | tee -a "$OUT/log.txt"
