#!/bin/sh
# How the shipped demo weights (weights/flare21_c2f.pt) are made, on a CPU, end to end:
#   sh training/demo_weights.sh WORK
# 1. 240 training phantoms (seed 1, at most 192 voxels per axis: the field of view of a full-size
#    scan at about 2 mm), cases with lesions listed for 3x sampling;
# 2. the coarse stage at 64^3 and the fine stage at 96^3 (training/configs/demo_*.json: the paper's
#    recipe with batch 2, LR 0.001 and a step budget that fits a 2-core CPU in about three hours);
# 3. the fine stage fine-tuned from its best weights, three times at 128^3 and once at 160^3, each
#    run from the one before (fp32; about 3.5 hours in all on 2 cores; docs/training.md);
# 4. one float16 checkpoint, WORK/first_c2f.pt: the coarse stage's best weights, and the mean of
#    the last two fine-tunes' best weights (160^3 and 128^3) run at 160^3;
# 5. 160 more phantoms (seed 2, a quarter of the scans reaching into the chest, a quarter short
#    slabs), linked with the first 240 into one folder, and the fine stage of step 4 fine-tuned on
#    them at 160^3 (its crops continued past the scan's edge, as inference does; about 45 min
#    where bf16 is the faster precision); WORK/second_c2f.pt: the coarse stage and the mean of
#    this fine-tune and step 4's fine stage;
# 6. both sets made again with half the colons holding homogeneous fluid instead of faeces
#    (--fluid-colon 0.5; the other cases are the same), and both stages of step 5 fine-tuned on them:
#    the coarse stage 1000 steps at LR 0.001 (about 25 min), the fine stage 182 steps at 160^3
#    (about 55 min); WORK/third_c2f.pt: this coarse stage and the mean of this fine-tune and
#    step 5's fine stage;
# 7. the second set made again with the pelvis and hips below the iliac crest (--pelvis 1), and 160
#    phantoms of seed 3 with them, half of those scans starting from the liver's widest part
#    (--liver-cut 0.5), linked with step 6's first set, and step 6's coarse stage fine-tuned on them
#    (1000 steps at LR 0.001, about 20-30 min); WORK/fourth_c2f.pt: this coarse stage and step 6's
#    fine stage;
# 8. step 6's first set and step 7's second set made again with the kidney label leaving out the
#    renal sinus fat (the generator's default since 2026-12-05; steps 1-7 pass --kidney-sinus 1 to
#    make their sets as they were made), and step 7's fine stage fine-tuned on them (217 steps at
#    160^3, about 60 min); WORK/fifth_c2f.pt: step 7's coarse stage and this fine stage;
# 9. step 8's second set made again with fat-filled fissures in every liver (--liver-fissures 1; the
#    other labels and the images away from the livers are the same), and step 8's fine stage
#    fine-tuned on it beside step 8's first set (243 steps at 160^3, about 60 min);
#    WORK/sixth_c2f.pt: step 7's coarse stage and this fine stage;
# 10. step 9's second set made again with the arms beside the body in half the cases and a long left
#    lobe in half (--arms 0.5 --long-left-lobe 0.5; the other cases are the same), and step 9's fine
#    stage fine-tuned on it beside step 8's first set (213 steps at 160^3, about 60 min);
#    WORK/seventh_c2f.pt: step 7's coarse stage and the mean of this fine-tune and step 9's fine stage;
# 11. 160 phantoms of seed 9, half of them scans of the lower abdomen (--lower-abdomen 0.5, with
#    pelvises), linked with step 8's first set and step 10's second, and both stages of step 10
#    fine-tuned on them (the coarse stage 252 steps, about 25 min; the fine stage 82 steps at 160^3,
#    about 50 min; fp32); then 160 of seed 10 added, 70 % of them lower-abdomen scans and 30 % more
#    without contrast, and that coarse stage fine-tuned once more (300 steps, about 25 min);
#    WORK/flare21_c2f.pt: the last coarse stage and the mean of this fine-tune and step 10's fine stage;
# 12. 20 test phantoms from a seed never used in training (full size: 512 x 512 in-plane), segmented
#    with predict.sh and scored with the FLARE21 rules into WORK/test-scores.
# PYTHON chooses the interpreter (default python3). Copy WORK/flare21_c2f.pt to weights/ to ship it.
set -eu
work="${1:?usage: sh training/demo_weights.sh WORK}"
py="${PYTHON:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mkdir -p "$work"
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }
# jemalloc as the C heap where it is installed: training steps 3x faster on the CPU (docs/training.md)
for lib in /usr/lib/*/libjemalloc.so.2 /usr/lib/libjemalloc.so.2; do
    if [ -f "$lib" ] && [ -z "${LD_PRELOAD:-}" ]; then
        export LD_PRELOAD="$lib" MALLOC_CONF="${MALLOC_CONF:-dirty_decay_ms:-1,muzzy_decay_ms:-1}"
    fi
done
trained_on="phantom-trained demo weights: 192 synthetic abdomens of training.phantom (seed 1), no real CT"
trained_on_fluid="phantom-trained demo weights: synthetic abdomens of training.phantom only, no real CT (both stages: seeds 1 and 2, scans into the chest, short slabs and colons of fluid among them)"
trained_on_pelvis="phantom-trained demo weights: synthetic abdomens of training.phantom only, no real CT (both stages: seeds 1 and 2, scans into the chest, short slabs and colons of fluid among them; the coarse stage also seed 3, pelvises with hips and scans from the liver's widest part among them)"
trained_on_sinus="phantom-trained demo weights: synthetic abdomens of training.phantom only, no real CT (both stages: seeds 1 and 2, scans into the chest, short slabs, colons of fluid and pelvises with hips among them; the coarse stage also seed 3, scans from the liver's widest part among them; the fine stage last on kidneys labelled without their sinus fat)"
trained_on_fissures="phantom-trained demo weights: synthetic abdomens of training.phantom only, no real CT (both stages: seeds 1 and 2, scans into the chest, short slabs, colons of fluid and pelvises with hips among them; the coarse stage also seed 3, scans from the liver's widest part among them; the fine stage last on kidneys labelled without their sinus fat, then on livers with fat-filled fissures)"
trained_on_arms="phantom-trained demo weights: synthetic abdomens of training.phantom only, no real CT (both stages: seeds 1 and 2, scans into the chest, short slabs, colons of fluid and pelvises with hips among them; the coarse stage also seed 3, scans from the liver's widest part among them; the fine stage last on kidneys labelled without their sinus fat, then on livers with fat-filled fissures, then also on long left lobes and arms beside the body)"
trained_on_lower="phantom-trained demo weights: synthetic abdomens of training.phantom only, no real CT (both stages: seeds 1 and 2, scans into the chest, short slabs, colons of fluid and pelvises with hips among them, and seed 9, scans of the lower abdomen into the hips among them; the coarse stage also seed 3, scans from the liver's widest part among them, and seed 10, more scans of the lower abdomen and without contrast; the fine stage also on kidneys labelled without their sinus fat, livers with fat-filled fissures, long left lobes and arms beside the body)"
trained_on_mixed="phantom-trained demo weights: synthetic abdomens of training.phantom only, no real CT (coarse stage: 192 of seed 1; fine stage: also fine-tuned on 320 of seeds 1 and 2, scans into the chest and short slabs among them)"

phantom_set() {  # NAME OPTION...: WORK/NAME, phantoms of training.phantom with those options, unless made
    name="$1"
    shift
    [ -f "$work/$name/cases.csv" ] || "$py" -m training.phantom --out "$work/$name" "$@" --workers 2
}
train_once() {  # NAME STAGE DATA INIT OPTION...: WORK/runs/NAME, STAGE trained on WORK/DATA from WORK/INIT
    name="$1" stage="$2" data="$3" init="$4"
    shift 4
    # a run begun before goes on from its last finished epoch (a finished one ends at once)
    [ -f "$work/runs/$name/resume.pt" ] && set -- "$@" --resume
    "$py" -m training.train --stage "$stage" --data "$work/$data" --out "$work/runs/$name" --init "$work/$init" "$@"
}

step "training phantoms"
phantom_set train --cases 240 --seed 1 --max-side 192 --kidney-sinus 1
for stage in coarse fine; do
    step "$stage stage"
    resume=""
    [ -f "$work/runs/$stage/resume.pt" ] && resume="--resume"
    "$py" -m training.train --stage "$stage" --data "$work/train" --out "$work/runs/$stage" \
        --config "training/configs/demo_$stage.json" $resume \
        --trained-on "$trained_on"
done
link_sets() {  # OUT SET:PREFIX...: one training folder of links to the sets' cases, named PREFIX_<case>
    out="$1"
    shift
    mkdir -p "$out/images" "$out/labels"
    : > "$out/pathological.txt"
    for set in "$@"; do
        folder="$work/${set%%:*}" prefix="${set##*:}"
        for f in "$folder"/images/*.nii.gz; do ln -sf "$f" "$out/images/${prefix}_$(basename "$f")"; done
        for f in "$folder"/labels/*.nii.gz; do ln -sf "$f" "$out/labels/${prefix}_$(basename "$f")"; done
        sed "s/^/${prefix}_/" "$folder/pathological.txt" >> "$out/pathological.txt"
    done
}
finetune() {  # NAME FROM: WORK/runs/NAME from WORK/runs/FROM/best.pt, with the remaining training options
    name="$1" from="$2"
    shift 2
    step "fine stage, $name"
    train_once "$name" fine train "runs/$from/best.pt" --precision fp32 --trained-on "$trained_on" "$@"
}
finetune fine128 fine --input-size 128 --lr 0.0003 --max-steps 53
finetune fine128b fine128 --config training/configs/demo_fine.json --input-size 128 --lr 0.0003 --max-steps 146
finetune fine128c fine128b --config training/configs/demo_fine.json --input-size 128 --lr 0.0001 --max-steps 122
finetune fine160 fine128c --config training/configs/demo_fine160.json

step "one checkpoint"
"$py" -m inference.checkpoint combine --coarse "$work/runs/coarse/best.pt" \
    --fine "$work/runs/fine160/best.pt" "$work/runs/fine128c/best.pt" -o "$work/first_c2f.pt" --half --trained-on "$trained_on"

step "chest and slab phantoms, and the fine stage fine-tuned on both sets"
phantom_set train2 --cases 160 --seed 2 --max-side 192 --chest 0.25 --slab 0.25 --kidney-sinus 1
link_sets "$work/mixed" train:s1 train2:s2
train_once fine160mixed fine mixed first_c2f.pt \
    --config training/configs/demo_fine160.json --lr 0.0001 --max-steps 250 --precision auto --trained-on "$trained_on_mixed"
"$py" -m inference.checkpoint combine --coarse "$work/first_c2f.pt" \
    --fine "$work/runs/fine160mixed/best.pt" "$work/first_c2f.pt" -o "$work/second_c2f.pt" --half --trained-on "$trained_on_mixed"

step "the same two sets with half the colons fluid, and both stages fine-tuned on them"
phantom_set train-fluid --cases 240 --seed 1 --max-side 192 --fluid-colon 0.5 --kidney-sinus 1
phantom_set train2-fluid --cases 160 --seed 2 --max-side 192 --chest 0.25 --slab 0.25 --fluid-colon 0.5 --kidney-sinus 1
link_sets "$work/mixed-fluid" train-fluid:s1 train2-fluid:s2
train_once coarse-fluid coarse mixed-fluid second_c2f.pt \
    --config training/configs/demo_coarse.json --lr 0.001 --max-steps 1000 --precision auto --trained-on "$trained_on_fluid"
train_once fine160fluid fine mixed-fluid second_c2f.pt \
    --config training/configs/demo_fine160.json --lr 0.0001 --max-steps 182 --precision auto --trained-on "$trained_on_fluid"
"$py" -m inference.checkpoint combine --coarse "$work/runs/coarse-fluid/best.pt" \
    --fine "$work/runs/fine160fluid/best.pt" "$work/second_c2f.pt" -o "$work/third_c2f.pt" --half \
    --trained-on "$trained_on_fluid"

step "pelvises and hips, scans from the liver's widest part, and the coarse stage fine-tuned on them"
phantom_set train2-pelvis --cases 160 --seed 2 --max-side 192 --chest 0.25 --slab 0.25 --fluid-colon 0.5 --pelvis 1 --kidney-sinus 1
phantom_set train3-pelvis --cases 160 --seed 3 --max-side 192 --fluid-colon 0.5 --liver-cut 0.5 --pelvis 1 --kidney-sinus 1
# the prefixes name the cases, and so the 5-fold split: those of the run that made the shipped weights
link_sets "$work/mixed-pelvis" train-fluid:s1 train2-pelvis:s2p train3-pelvis:s4
train_once coarse-pelvis coarse mixed-pelvis third_c2f.pt \
    --config training/configs/demo_coarse.json --lr 0.001 --max-steps 1000 --precision auto --trained-on "$trained_on_pelvis"
"$py" -m inference.checkpoint combine --coarse "$work/runs/coarse-pelvis/best.pt" --fine "$work/third_c2f.pt" \
    -o "$work/fourth_c2f.pt" --half --trained-on "$trained_on_pelvis"

step "kidneys labelled without their sinus fat, and the fine stage fine-tuned on them"
phantom_set train-sinus --cases 240 --seed 1 --max-side 192 --fluid-colon 0.5
phantom_set train2-sinus --cases 160 --seed 2 --max-side 192 --chest 0.25 --slab 0.25 --fluid-colon 0.5 --pelvis 1
link_sets "$work/mixed-sinus" train-sinus:s1 train2-sinus:s2p
train_once fine160sinus fine mixed-sinus fourth_c2f.pt \
    --config training/configs/demo_fine160.json --lr 0.0001 --max-steps 217 --precision auto --trained-on "$trained_on_sinus"
"$py" -m inference.checkpoint combine --coarse "$work/fourth_c2f.pt" --fine "$work/runs/fine160sinus/best.pt" \
    -o "$work/fifth_c2f.pt" --half --trained-on "$trained_on_sinus"

step "livers with fat-filled fissures, and the fine stage fine-tuned on them"
phantom_set train2-fissures --cases 160 --seed 2 --max-side 192 --chest 0.25 --slab 0.25 --fluid-colon 0.5 --pelvis 1 --liver-fissures 1
link_sets "$work/mixed-fissures" train-sinus:s1 train2-fissures:s2p
train_once fine160fissures fine mixed-fissures fifth_c2f.pt \
    --config training/configs/demo_fine160.json --lr 0.0001 --max-steps 243 --precision auto --trained-on "$trained_on_fissures"
"$py" -m inference.checkpoint combine --coarse "$work/fifth_c2f.pt" --fine "$work/runs/fine160fissures/best.pt" \
    -o "$work/sixth_c2f.pt" --half --trained-on "$trained_on_fissures"

step "arms beside the body and long left lobes, and the fine stage fine-tuned on them"
phantom_set train2-arms --cases 160 --seed 2 --max-side 192 --chest 0.25 --slab 0.25 --fluid-colon 0.5 --pelvis 1 --liver-fissures 1 \
    --arms 0.5 --long-left-lobe 0.5
link_sets "$work/mixed-arms" train-sinus:s1 train2-arms:s2p
train_once fine160arms fine mixed-arms sixth_c2f.pt \
    --config training/configs/demo_fine160.json --lr 0.0001 --max-steps 213 --precision auto --trained-on "$trained_on_arms"
"$py" -m inference.checkpoint combine --coarse "$work/sixth_c2f.pt" --fine "$work/runs/fine160arms/best.pt" "$work/sixth_c2f.pt" \
    -o "$work/seventh_c2f.pt" --half --trained-on "$trained_on_arms"

step "scans of the lower abdomen, and both stages fine-tuned on them"
phantom_set train9-lower --cases 160 --seed 9 --max-side 192 --lower-abdomen 0.5 --pelvis 1 --fluid-colon 0.5 \
    --liver-fissures 0.5 --arms 0.3 --long-left-lobe 0.3
link_sets "$work/mixed-lower" train-sinus:s1 train2-arms:s2p train9-lower:s9
train_once coarse-lower coarse mixed-lower seventh_c2f.pt \
    --config training/configs/demo_coarse.json --lr 0.001 --max-steps 252 --precision fp32 --seed 13 --trained-on "$trained_on_lower"
train_once fine160lower fine mixed-lower seventh_c2f.pt \
    --config training/configs/demo_fine160.json --lr 0.0003 --max-steps 82 --precision fp32 --seed 13 --trained-on "$trained_on_lower"
phantom_set train10-lower --cases 160 --seed 10 --max-side 192 --lower-abdomen 0.7 --pelvis 1 --non-contrast 0.3 \
    --fluid-colon 0.5 --liver-fissures 0.5 --arms 0.3
link_sets "$work/mixed-lower2" train-sinus:s1 train2-arms:s2p train9-lower:s9 train10-lower:s10
"$py" -m inference.checkpoint combine --coarse "$work/runs/coarse-lower/best.pt" --fine "$work/seventh_c2f.pt" \
    -o "$work/eighth_c2f.pt" --half --trained-on "$trained_on_lower"  # the second run starts from its float16 weights
train_once coarse-lower2 coarse mixed-lower2 eighth_c2f.pt \
    --config training/configs/demo_coarse.json --lr 0.001 --max-steps 300 --precision fp32 --seed 14 --trained-on "$trained_on_lower"
"$py" -m inference.checkpoint combine --coarse "$work/runs/coarse-lower2/best.pt" \
    --fine "$work/runs/fine160lower/best.pt" "$work/seventh_c2f.pt" -o "$work/flare21_c2f.pt" --half --trained-on "$trained_on_lower"

step "test phantoms (seed 1000, never trained on)"
phantom_set test --cases 20 --seed 1000
# predict chooses its own heap (jemalloc beside OpenVINO aborted at exit: docs/pipeline.md)
LD_PRELOAD= PYTHON="$py" sh predict.sh "$work/test/images" "$work/test/predictions" --weights "$work/flare21_c2f.pt" --report "$work/test/report.json"
"$py" -m evaluation.score --gt "$work/test/labels" --pred "$work/test/predictions" --out "$work/test-scores" --rules flare21
