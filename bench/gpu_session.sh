#!/bin/sh
# Every GPU measurement of the submission and of the efficiency harness in one run, for a machine
# with an NVIDIA GPU that is held for a short time:
#   sh bench/gpu_session.sh OUT [EXTRA]
# 1. two phantom CTs (CASES; training/phantom/ through evaluation.synthetic) of 512x512x200 at
#    0.8 x 0.8 x 2.5 mm centred on the abdomen, with their ground truth, plus the CTs in EXTRA/images
#    with ground truth in EXTRA/gt (optional, e.g. a real CT);
# 2. bench.bench_submission with the shipped weights at the paper's sizes: the authors' networks'
#    forward time, cold time per case through the efficiency harness (start-up and every stage,
#    NVML peak), warm FP16 per stage, cuDNN autotuner, FP16 vs FP32 agreement, torch peak memory;
# 3. evaluation.run with the FLARE21 rules on `sh predict.sh` (shipped weights): efficiency (NVML
#    sampled every 0.1 s) then accuracy, with its report;
# 4. bench.bench_postprocessing (CPU) at the same shape.
# Writes OUT/nvidia-smi.txt, OUT/bench_submission.md, OUT/bench_submission.json, OUT/efficiency.csv
# and OUT/results.tgz (reports, samples and plots; no images). PYTHON chooses the interpreter
# (default python3); a dry run of this script on a CPU:
#   SHAPE="64 64 32" BENCH_SHAPES=64x64x32 SIZES="32 32" DEVICE=cpu sh bench/gpu_session.sh OUT
set -u
out="${1:?usage: sh bench/gpu_session.sh OUT [EXTRA]}"
extra="${2:-}"
py="${PYTHON:-python3}"
shape="${SHAPE:-512 512 200}"
device="${DEVICE:-cuda}"
export PYTHON="$py" PYTHONUNBUFFERED=1
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
mkdir -p "$out"
cd "$root" || exit 2

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "device"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
"$py" -c "import torch, nibabel, cc3d, pynvml; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" || exit 2

step "data"
"$py" -m evaluation.synthetic -o "$work/data" --cases "${CASES:-2}" --shape $shape --spacing 0.8 0.8 2.5 || exit 2
if [ -n "$extra" ]; then
    cp "$extra"/images/* "$work/data/images/" && cp "$extra"/gt/* "$work/data/gt/" || exit 2
fi

step "bench_submission"
real=""
[ -n "$extra" ] && real="--real $extra/images/*"
"$py" -m bench.bench_submission --device "$device" --shapes ${BENCH_SHAPES:-512x512x160 512x512x300} \
    --sizes ${SIZES:-160 192} $real \
    --out "$work/bench_submission" > "$out/bench_submission.md"
cat "$out/bench_submission.md"
cp "$work/bench_submission/bench_submission.json" "$out/" 2>/dev/null

step "evaluation.run, FLARE21 rules"
"$py" -m evaluation.run --inputs "$work/data/images" --gt "$work/data/gt" --out "$work/run" --rules flare21 \
    --gpu 0 --timeout 600 --command "sh $root/predict.sh {inputs} {outputs}"
cp "$work/run/efficiency/efficiency.csv" "$out/"
cat "$out/efficiency.csv" 2>/dev/null

step "post-processing on this machine's CPU"
"$py" -m bench.bench_postprocessing --shape $shape

step "pack"
tar czf "$out/results.tgz" -C "$work" --exclude='*.pt' --exclude='*.nii.gz' bench_submission run
ls -la "$out"
