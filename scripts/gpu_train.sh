#!/usr/bin/env bash
# Train both shipped model sizes side by side on one lent GPU machine (docs/gpu-training.md).
#
#   scripts/gpu_train.sh TRAIN_MINUTES SCHEDULE_MINUTES [bench]
#
# Runs from the repository root on the device machine, where python3 has PyTorch with CUDA, OpenCV,
# NumPy and onnx, and nothing else of ours: the trainer is imported from src/ (it needs none of the
# daemon's packages). Each size trains for TRAIN_MINUTES in this call; SCHEDULE_MINUTES is the whole run
# over all calls, which the cosine learning rate follows. A size resumes from runs/gpu/SIZE/last.pt (a
# machine still warm from the last call keeps it) or carry.pt (the compact checkpoint carried back in);
# otherwise the default size starts from the shipped model's weights and the quality size from scratch.
# Leaves in $OUT, within the device's 8-file limit: SIZE/carry.pt and SIZE/run.tar.gz (log, validation
# grid, command) for each size, gpu.txt (device, utilisation, throughput) and, with "bench", the
# inference table of scripts/bench_gpu.py in gpu-bench.md.
set -euo pipefail
train_minutes=${1:?usage: scripts/gpu_train.sh TRAIN_MINUTES SCHEDULE_MINUTES [bench]}
schedule_minutes=${2:?usage: scripts/gpu_train.sh TRAIN_MINUTES SCHEDULE_MINUTES [bench]}
bench=${3:-}
pack=${PACK:-.cache/faces-pack.npz}
runs=${RUNS:-runs/gpu}
out=${OUT:?OUT: the folder whose files come back from the device machine}
python=${PYTHON:-python3}
# The recipe for this hardware: full 128 px crops, batch 64 per step. EXTRA_ARGS adds or overrides options
# (a local check of this script on a CPU passes a tiny batch).
recipe=(--patch 128 --batch 64 --warmup 500 --grad-clip 0.5 --ema 0.999 --val-every 2000 --val-count 330
        --steps 100000000)
# The default size fine-tunes the shipped weights, at half the rate of the quality size, which starts from
# scratch (its dip when the rate warms up again: docs/gpu-training.md).
# The kernel-aware sizes also start from the shipped weights: kernel-aware-deep is the shipped design (0.7.0,
# trained by scripts/campaign on the CPU), so SIZES="kernel-aware-deep quality" continues it;
# kernel-aware-frequency is the shallower network it grew from (0.3.0-0.6.0).
declare -A learning_rate=([default]=${LR_DEFAULT:-5e-4} [quality]=${LR_QUALITY:-1e-3} [kernel-aware]=${LR_KERNEL_AWARE:-5e-4}
                          [kernel-aware-frequency]=${LR_KERNEL_AWARE:-5e-4} [kernel-aware-deep]=${LR_KERNEL_AWARE:-5e-4})
read -r -a sizes <<<"${SIZES:-default quality}"  # MODEL_SIZES in src/facedeblur/trainer/options.py
[ -f "$pack" ] || { echo "gpu_train: $pack not found; make it with 'facedeblur train pack' and carry it" >&2; exit 2; }
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-30} OMP_NUM_THREADS=2
cores=$(nproc)
workers=$(( (cores - 2) / 2 > 1 ? (cores - 2) / 2 : 1 ))  # two trainings share the cores: damage is made on them

mkdir -p "$runs"
gpu_report="$out/gpu.txt"
{ echo "# $(date -u +%FT%TZ) train ${train_minutes} min of ${schedule_minutes}; ${cores} cores, ${workers} workers per size"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no NVIDIA GPU"
} | tee "$gpu_report"
sampler=""
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 5 > "$runs.util.csv" &
    sampler=$!
fi

pids=()
for size in "${sizes[@]}"; do
    mkdir -p "$runs/$size"
    start=(--resume)
    if [ "$size" != quality ] && [ ! -f "$runs/$size/last.pt" ] && [ ! -f "$runs/$size/carry.pt" ]; then
        start+=(--init src/facedeblur/models/facedeblur-default.onnx)
    fi
    # shellcheck disable=SC2086  # EXTRA_ARGS is a list of options on purpose
    "$python" -m facedeblur.trainer.train --data "$pack" --out "$runs/$size" --size "$size" "${start[@]}" \
        --lr "${learning_rate[$size]}" --workers "$workers" --max-minutes "$train_minutes" --schedule-minutes "$schedule_minutes" \
        --seed "$(date +%s)" "${recipe[@]}" ${EXTRA_ARGS:-} > "$runs/$size/train.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
[ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true

for size in "${sizes[@]}"; do
    echo "## $size" | tee -a "$gpu_report"
    grep -E "^(model|resumed|initialised|trained)|Error|error" "$runs/$size/train.log" | tee -a "$gpu_report" || true
    tail -n 1 "$runs/$size/log.jsonl" 2>/dev/null | tee -a "$gpu_report" || true
    mkdir -p "$out/$size"
    [ -f "$runs/$size/carry.pt" ] && cp "$runs/$size/carry.pt" "$out/$size/carry.pt"
    grid=$(ls "$runs/$size"/val-*.png 2>/dev/null | tail -n 1 || true)
    (cd "$runs/$size" && tar czf "$out/$size/run.tar.gz" train.log $(ls log.jsonl command.txt 2>/dev/null) \
        ${grid:+$(basename "$grid")})
done
if [ -f "$runs.util.csv" ]; then
    awk -F', ' '{u += $1; if ($1 > m) m = $1; if ($2 > g) g = $2; n++}
        END {if (n) printf "GPU utilisation: mean %.0f%%, max %d%% over %d samples (5 s apart); memory up to %d MiB\n", u / n, m, n, g}' \
        "$runs.util.csv" | tee -a "$gpu_report"
fi
if [ "$bench" = bench ]; then
    "$python" scripts/bench_gpu.py --checkpoints "$runs" --out "$out/gpu-bench.md" | tee -a "$gpu_report"
fi
exit "$status"
