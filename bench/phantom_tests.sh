#!/bin/sh
# A checkpoint against the shipped weights on three sets of full-size test phantoms no weights were
# trained on: plain ones (seed 1000), ones with large spleens (seed 1100, --large-spleen 1:
# where the shipped weights label the spleen's back kidney, as on real contrast-enhanced CT) and
# scans of the lower abdomen into the hips (seed 1100, --lower-abdomen 1 --pelvis 1: where the
# shipped weights label liver and spleen that are not there, as on real CT):
#   sh bench/phantom_tests.sh WEIGHTS OUT
# Each set is segmented with both weights through predict.sh (one process per set and weights) and
# scored with the FLARE21 rules; OUT/phantom_tests.md holds the six summary tables. CASES phantoms
# a set (default 10), DEVICE (default auto), PYTHON the interpreter (default python3). On a GPU
# machine bench/gpu_train.sh runs it after training; where GPU time is short, the checkpoint
# comes back and this runs on the CPU instead (about 15 s a case and weights on 2 cores). Exit
# code: 0 when every set was segmented and scored with both weights, 1 when any failed, 2 usage.
set -u
weights="${1:?usage: sh bench/phantom_tests.sh WEIGHTS OUT}"
out="${2:?usage: sh bench/phantom_tests.sh WEIGHTS OUT}"
py="${PYTHON:-python3}"
device="${DEVICE:-auto}"
cases="${CASES:-10}"
[ -f "$weights" ] || { echo "bench/phantom_tests.sh: $weights: no such file" >&2; exit 2; }
weights="$(cd "$(dirname "$weights")" && pwd)/$(basename "$weights")"
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
cd "$root" || exit 2
rm -f "$out/phantom_tests.md"
status=0

"$py" -m training.phantom --out "$work/test" --cases "$cases" --seed 1000 --workers "$(nproc)" || exit 2
"$py" -m training.phantom --out "$work/test-spleen" --cases "$cases" --seed 1100 --large-spleen 1 \
    --workers "$(nproc)" || exit 2
"$py" -m training.phantom --out "$work/test-lower" --cases "$cases" --seed 1100 --lower-abdomen 1 --pelvis 1 \
    --workers "$(nproc)" || exit 2
(
    echo "# $(basename "$weights") against the shipped weights, $cases test phantoms a set ($(date -u +%F))"
    for set in test test-spleen test-lower; do
        for name in checkpoint shipped; do
            w="$weights"
            [ "$name" = shipped ] && w="weights/flare21_c2f.pt"
            echo "## $set: $name ($w)"
            if ! PYTHON="$py" sh predict.sh "$work/$set/images" "$work/pred-$set-$name" --weights "$w" \
                    --device "$device" > "$work/predict-$set-$name.log" 2>&1; then
                echo "predict.sh failed:"
                tail -n 5 "$work/predict-$set-$name.log"
                status=1
            elif "$py" -m evaluation.score --gt "$work/$set/labels" --pred "$work/pred-$set-$name" \
                    --out "$work/scores-$set-$name" --rules flare21 > /dev/null; then
                cat "$work/scores-$set-$name/summary.csv"
            else
                echo "scoring failed"
                status=1
            fi
        done
    done
    exit "$status"
) > "$out/phantom_tests.md" 2>&1
status=$?
cat "$out/phantom_tests.md"
rm -rf "$work"
exit "$status"
