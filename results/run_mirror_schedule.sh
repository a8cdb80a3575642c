#!/usr/bin/env bash
# As much of the paper's DailyDialog schedule for Mirror as fits a time budget, then
# decoding and scoring the test set, in one go (for machines that limit a command's time).
#
#   results/run_mirror_schedule.sh [DATA] [OUT] [BUDGET_SECONDS] [VOCAB]
#
# Trains examples/dailydialog/mirror.yaml (batch 128, Adam 1e-3, KL annealing, validation
# and a checkpoint every epoch of 507 steps) with the stock onmt_train until BUDGET
# seconds have passed, decodes the 5,740 test windows from the newest checkpoint (beam 10,
# n_best 1, lengths 3-40, z = the prior's mean) and scores them. Epochs done = last
# checkpoint's step / 507. VECTORS=FILE scores the embedding metrics with that GloVe text
# file instead of the packaged GloVe (e.g. a subset where the package is not installed).
# CONFIG, TRAIN_EXTRA (extra onmt_train options) and GPU=0 (CPU) let a smoke test run it.
set -u
CONFIG=${CONFIG:-examples/dailydialog/mirror.yaml}
TRAIN_EXTRA=${TRAIN_EXTRA:-}
GPU_OPT=$([ "${GPU:-1}" = 0 ] && echo "" || echo "-gpu 0")
DATA=${1:-data/dailydialog}
OUT=${2:-run/schedule}
BUDGET=${3:-430}
VOCAB=${4:-run/dailydialog/vocab.txt}
RUN=$OUT/checkpoints
mkdir -p "$RUN"
log() { echo "[$(date +%T)] $*"; }
[ -s "$VOCAB" ] || onmt_build_vocab -config "$CONFIG" -n_sample -1 \
    -src_vocab "$VOCAB"

log "training for ${BUDGET}s"
timeout -s KILL "$BUDGET" onmt_train -config "$CONFIG" -src_vocab "$VOCAB" \
    -save_model "$RUN/mirror" -keep_checkpoint 1 -log_file "$OUT/onmt_train.log" \
    -save_data "$OUT/samples" -tensorboard_log_dir "$OUT/tensorboard" $TRAIN_EXTRA \
    > "$OUT/train.log" 2>&1
# a checkpoint being written when training is killed is a hidden temporary file (the
# plugin's atomic saves), so the newest *_step_N.pt is complete
CKPT=$(ls -v "$RUN"/mirror_step_*.pt 2>/dev/null | tail -n1)
[ -n "$CKPT" ] || { log "no checkpoint within ${BUDGET}s; see $OUT/train.log"; exit 1; }
STEP=${CKPT##*_step_}; STEP=${STEP%.pt}
log "trained: $(grep -c ' Step ' "$OUT/train.log") reports; newest checkpoint at step $STEP" \
    "= $(awk -v s="$STEP" 'BEGIN{printf "%.1f", s / 507}') epochs"
onmt_translate -model "$CKPT" -src "$DATA/test.src" -output "$OUT/mirror.txt" $GPU_OPT \
    -beam_size 10 -n_best 1 -max_length 40 -min_length 3 -length_penalty none \
    -batch_size 64 -mirror_z mean -report_time > "$OUT/translate.log" 2>&1
log "decoded $(wc -l < "$OUT/mirror.txt") test windows"
python3 -m onmt_mirror.evaluate --ref "$DATA/test.tgt" --src "$DATA/test.src" \
    --hyp "mirror=$OUT/mirror.txt" --json "$OUT/scores.json" --markdown "$OUT/scores.md" \
    ${VECTORS:+--vectors "$VECTORS"} || { log "scoring failed"; exit 1; }
log "scored"
