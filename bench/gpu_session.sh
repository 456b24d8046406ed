#!/bin/sh
# Every GPU measurement of the submission and of the efficiency harness in one run, for a machine
# with an NVIDIA GPU that is held for a short time:
#   sh bench/gpu_session.sh OUT [EXTRA]
# 1. two phantom CTs (CASES; training/phantom.py through evaluation.synthetic) of 512x512x200 at
#    0.8 x 0.8 x 2.5 mm centred on the abdomen, with their ground truth, plus the CTs in EXTRA/images
#    with ground truth in EXTRA/gt (optional, e.g. a real CT);
# 2. untrained full-size weights (no trained ones exist yet);
# 3. bench.gpu_check on them: cold time per case (predict.sh started once per case), warm FP16
#    and FP32 times, cuDNN autotuner, FP16 vs FP32 agreement, NVML and torch peak memory;
# 4. evaluation.run with the FLARE21 rules on `sh predict.sh`: efficiency (NVML sampled every
#    0.1 s) then accuracy, with its report;
# 5. bench.bench_postprocessing (CPU) at the same shape.
# Writes OUT/nvidia-smi.txt, OUT/gpu_check.md, OUT/gpu_check.json, OUT/efficiency.csv and
# OUT/results.tgz (reports, samples and plots; no images). PYTHON chooses the interpreter (default python3);
# a dry run of this script on a CPU: SHAPE="64 64 32" DEVICE=cpu sh bench/gpu_session.sh OUT
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
"$py" -m inference.checkpoint random -o "$work/untrained.pt" || exit 2

step "gpu_check"
"$py" -m bench.gpu_check --weights "$work/untrained.pt" --inputs "$work/data/images" --out "$work/gpu_check" \
    --device "$device" \
    > "$out/gpu_check.md"
cat "$out/gpu_check.md"
cp "$work/gpu_check/gpu_check.json" "$out/" 2>/dev/null

step "evaluation.run, FLARE21 rules"
"$py" -m evaluation.run --inputs "$work/data/images" --gt "$work/data/gt" --out "$work/run" --rules flare21 \
    --gpu 0 --timeout 600 --command "sh $root/predict.sh {inputs} {outputs} --weights $work/untrained.pt"
cp "$work/run/efficiency/efficiency.csv" "$out/"
cat "$out/efficiency.csv" 2>/dev/null

step "post-processing on this machine's CPU"
"$py" -m bench.bench_postprocessing --shape $shape

step "pack"
tar czf "$out/results.tgz" -C "$work" --exclude='*.pt' --exclude='*.nii.gz' gpu_check run
ls -la "$out"
