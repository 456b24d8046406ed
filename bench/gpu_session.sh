#!/bin/sh
# Every GPU measurement of the submission and of the efficiency harness in one run, for a machine
# with an NVIDIA GPU that is held for a short time (each step has a time limit: 500 s in all, and
# 5 s more each to kill a step that does not stop; under 9 minutes. The limits are sized for the
# GPU machine: with DEVICE=cpu, a dry run, they are off):
#   sh bench/gpu_session.sh OUT [EXTRA]
# 1. the interpreter's libraries and, with DEVICE=cuda (the default), a CUDA GPU that torch sees
#    (exit 2 at once where either is missing), then nvidia-smi;
# 2. two phantom CTs (CASES; training/phantom/ through evaluation.synthetic) of 512x512x200 at
#    0.8 x 0.8 x 2.5 mm centred on the abdomen, with their ground truth, plus the CTs in EXTRA/images
#    with ground truth in EXTRA/gt (optional, e.g. a real CT);
# 3. bench.bench_submission with the shipped weights at the paper's sizes: the authors' networks'
#    forward time, cold time per case through the efficiency harness (start-up and every stage,
#    NVML peak), warm FP16 per stage, cuDNN autotuner, FP16 vs FP32 agreement, torch peak memory;
# 4. evaluation.run with the FLARE21 rules on `sh predict.sh` (shipped weights): efficiency (NVML
#    sampled every 0.1 s) then accuracy, with its report;
# 5. OUT/results.tgz (reports, samples and plots; no images), packed before the CPU-only step:
# 6. bench.bench_postprocessing (CPU) at the same shape, one run of each implementation.
# A step that fails or runs out of time is noted and the next one runs; the exit status is 1 when
# any step failed (OUT/failed.txt names them), else 0. Writes each step's output: OUT/STEP.out
# (its tables: nvidia-smi.out, bench_submission.out, evaluation_run.out, bench_postprocessing.out)
# and OUT/STEP.log (its messages), and OUT/bench_submission.json and OUT/efficiency.csv. PYTHON
# chooses the interpreter (default python3); a dry run of this script on a CPU:
#   SHAPE="64 64 32" BENCH_SHAPES=64x64x32 SIZES="32 32" DEVICE=cpu sh bench/gpu_session.sh OUT
set -u
out="${1:?usage: sh bench/gpu_session.sh OUT [EXTRA]}"
extra="${2:-}"
py="${PYTHON:-python3}"
shape="${SHAPE:-512 512 200}"
device="${DEVICE:-cuda}"
export PYTHON="$py" PYTHONUNBUFFERED=1
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out" && out="$(cd "$out" && pwd)" || exit 2  # absolute: every path below is used after the cd
if [ -n "$extra" ]; then
    extra="$(cd "$extra" && pwd)" || { echo "error: EXTRA $2: no such folder" >&2; exit 2; }
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$root" || exit 2
rm -f "$out/failed.txt"

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

# run NAME SECONDS COMMAND...: COMMAND under a time limit (none on the CPU: 0 turns timeout's off),
# its stdout shown and kept in OUT/NAME.out, its stderr in OUT/NAME.log (the last lines shown); a
# failure is noted in OUT/failed.txt.
run() {
    name="$1" limit="$2"
    shift 2
    limited="at most $limit s"
    [ "$device" = cuda ] || { limit=0; limited="no time limit"; }
    step "$name ($limited)"
    { timeout --kill-after=5 "$limit" "$@" 2> "$out/$name.log"; echo $? > "$work/$name.status"; } | tee "$out/$name.out"
    status="$(cat "$work/$name.status")"
    tail -n 5 "$out/$name.log" >&2
    if [ "$status" != 0 ]; then
        reason="exit $status"
        [ "$status" = 124 ] || [ "$status" = 137 ] && reason="out of time after $limit s"
        echo "$name: $reason (see $name.log)" | tee -a "$out/failed.txt" >&2
    fi
}

step "device"
timeout 55 "$py" -c "import sys, torch, nibabel, cc3d, pynvml, pandas, scipy, matplotlib, psutil
print('torch', torch.__version__, 'CUDA', torch.version.cuda)
sys.exit(sys.argv[1] == 'cuda' and not torch.cuda.is_available() and 'error: DEVICE=cuda, but torch sees no CUDA GPU')" \
    "$device" || exit 2
[ "$device" = cuda ] && run nvidia-smi 10 nvidia-smi

run data 55 "$py" -m evaluation.synthetic -o "$work/data" --cases "${CASES:-2}" --shape $shape --spacing 0.8 0.8 2.5
if [ -n "$extra" ]; then
    cp "$extra"/images/* "$work/data/images/" && cp "$extra"/gt/* "$work/data/gt/" \
        || echo "data: EXTRA's images or gt could not be copied" | tee -a "$out/failed.txt" >&2
fi

real=""
[ -n "$extra" ] && real="--real $extra/images/*"
# $real and $shape are lists of words: left unquoted to split
run bench_submission 230 "$py" -m bench.bench_submission --device "$device" --shapes ${BENCH_SHAPES:-512x512x160 512x512x300} \
    --sizes ${SIZES:-160 192} $real --cold-runs 1 --out "$work/bench_submission"
cp "$work/bench_submission/bench_submission.json" "$out/" 2>/dev/null

run evaluation_run 100 "$py" -m evaluation.run --inputs "$work/data/images" --gt "$work/data/gt" --out "$work/run" \
    --rules flare21 --gpu 0 --timeout 60 --command "sh $root/predict.sh {inputs} {outputs}"
cp "$work/run/efficiency/efficiency.csv" "$out/" 2>/dev/null

made="$(cd "$work" && ls -d bench_submission run 2>/dev/null)"  # what the steps above left: names without spaces
run pack 10 tar czf "$out/results.tgz" -C "$work" --exclude='*.pt' --exclude='*.nii.gz' $made

run bench_postprocessing 40 "$py" -m bench.bench_postprocessing --shape $shape --repeats 1

ls -la "$out"
if [ -s "$out/failed.txt" ]; then
    printf '\nfailed steps:\n' >&2
    cat "$out/failed.txt" >&2
    exit 1
fi
exit 0
