#!/usr/bin/env bash
# The DailyDialog comparison of docs/results.md, from prepared data, on one 4-GPU host.
#
#   results/run_dailydialog.sh [DATA] [OUT] [BUDGET_SECONDS]
#
# Every system trains with its recipe (examples/dailydialog/*.yaml) for the same wall-clock
# budget, one GPU each (HRED and the MMI backward model share GPU 3: five trainings, four
# cards), checkpointing every 250 steps; then each decodes the 5,740 test windows with beam
# 10, n_best 1, max length 40, min length 3, no length penalty. MMI re-ranks Seq2SeqAttn's
# 10-best with the backward model (λ, γ tuned on 1,000 validation windows); DC decodes
# Seq2SeqAttn with the topic/SIF constraints (the paper's α, β); DC-MMI re-ranks DC's 10-best.
# Predictions go to OUT/<system>.txt; logs and the per-decoder loss curves beside them.
# TRAIN_EXTRA (extra onmt_train options) and GPU=0 (CPU only) let a CPU smoke test run it.
# SYSTEMS=dc trains only Seq2SeqAttn (GPU 0) and decodes DC: what docs/results.md's second
# run did after the first run's DC fit failed.
set -u
SYSTEMS=${SYSTEMS:-all}
TRAIN_EXTRA=${TRAIN_EXTRA:-}
GPU_OPT=$([ "${GPU:-1}" = 0 ] && echo "" || echo "-gpu 0")
DATA=${1:-data/dailydialog}
OUT=${2:-run/results}
BUDGET=${3:-300}
RUN=run/dailydialog
mkdir -p "$OUT" "$RUN/mmi_backward"
DEC="-beam_size 10 -max_length 40 -min_length 3 -length_penalty none -batch_size 64 -report_time"
log() { echo "[$(date +%T)] $*"; }

[ -s $RUN/vocab.txt ] || onmt_build_vocab -config examples/dailydialog/mirror.yaml -n_sample -1
[ -s $RUN/mmi_backward/vocab.txt ] || \
    onmt_build_vocab -config examples/dailydialog/mmi_backward.yaml -n_sample -1

train() {  # name gpu config: train for BUDGET seconds, keep checkpoints every 250 steps
    local name=$1 gpu=$2 config=$3
    CUDA_VISIBLE_DEVICES=$gpu timeout -s KILL "$BUDGET" onmt_train -config "$config" \
        -save_model "$RUN/$name" -log_file "$OUT/$name.train.log" -train_steps 1000000 \
        -save_checkpoint_steps 250 -keep_checkpoint 2 -early_stopping 0 $TRAIN_EXTRA \
        > /dev/null 2>&1
    log "$name: training stopped after ${BUDGET}s"
}
last() { ls -v "$RUN/$1"_step_*.pt 2>/dev/null | tail -n1; }
# a checkpoint being written when training is killed is a hidden temporary file (the
# plugin's atomic saves), so the newest *_step_N.pt is always complete

log "training for ${BUDGET}s each"
G=1; [ "$SYSTEMS" = dc ] && G=0  # Seq2SeqAttn's GPU
train seq2seq $G examples/dailydialog/seq2seq.yaml &
if [ "$SYSTEMS" = all ]; then
    train mirror 0 examples/dailydialog/mirror.yaml &
    train cvae 2 examples/dailydialog/cvae.yaml &
    train hred 3 examples/dailydialog/hred.yaml &
    train mmi_backward 3 examples/dailydialog/mmi_backward.yaml &
fi
# DC's side models (LDA + SIF) take minutes of CPU: fit them during training, with the
# word vectors of Seq2SeqAttn's first checkpoint (copied: keep_checkpoint deletes it)
(while [ -z "$(last seq2seq)" ]; do sleep 5; done
 sleep 5; cp "$(last seq2seq)" "$RUN/dc_vectors.pt"
 python -m onmt_mirror.dc fit --train_src "$DATA/train.src" --train_tgt "$DATA/train.tgt" \
     --model "$RUN/dc_vectors.pt" --out "$RUN/dc" --lda_iter 10 >> "$OUT/dc.log" 2>&1
 log "dc side models fitted") &
wait

head -n 1000 "$DATA/valid.src" > "$OUT/valid1k.src"
head -n 1000 "$DATA/valid.tgt" > "$OUT/valid1k.tgt"
translate() {  # gpu model output [options...]
    local gpu=$1 model=$2 output=$3; shift 3
    CUDA_VISIBLE_DEVICES=$gpu onmt_translate -model "$model" -output "$output" $GPU_OPT \
        $DEC "$@" >> "$OUT/translate.log" 2>&1
}
M=$(last mirror); S=$(last seq2seq); C=$(last cvae); H=$(last hred); B=$(last mmi_backward)
log "checkpoints: $M $S $C $H $B"
if [ "$SYSTEMS" = dc ]; then
    translate $G "$S" "$OUT/seq2seq_dcrun.txt" -src "$DATA/test.src"
    translate $G "$S" "$OUT/dc.txt" -src "$DATA/test.src" -dc_model "$RUN/dc"
    log "dc decoded"
    wc -l "$OUT"/*.txt
    exit 0
fi
(translate 0 "$M" "$OUT/mirror.txt" -src "$DATA/test.src" -mirror_z mean
 translate 0 "$M" "$OUT/mirror_zsample.txt" -src "$DATA/test.src" -mirror_z sample -seed 1
 log "mirror decoded") &
(translate 2 "$C" "$OUT/cvae.txt" -src "$DATA/test.src"; log "cvae decoded") &
(translate 3 "$H" "$OUT/hred.txt" -src "$DATA/test.src"; log "hred decoded") &
(translate 1 "$S" "$OUT/seq2seq.txt" -src "$DATA/test.src"
 log "seq2seq decoded"
 for split in valid1k test; do
     src="$DATA/test.src"; [ $split = valid1k ] && src="$OUT/valid1k.src"
     translate 1 "$S" "$OUT/nbest_$split.txt" -src "$src" -n_best 10
     CUDA_VISIBLE_DEVICES=1 python -m onmt_mirror.rerank score --src "$src" \
         --nbest "$OUT/nbest_$split.txt" --n-best 10 --forward "$S" --backward "$B" \
         --output "$OUT/mmi_$split.tsv" >> "$OUT/rerank.log" 2>&1
 done
 python -m onmt_mirror.rerank tune --scores "$OUT/mmi_valid1k.tsv" --ref "$OUT/valid1k.tgt" \
     --output "$OUT/mmi.json" >> "$OUT/rerank.log" 2>&1
 python -m onmt_mirror.rerank apply --scores "$OUT/mmi_test.tsv" --params "$OUT/mmi.json" \
     --output "$OUT/mmi.txt" >> "$OUT/rerank.log" 2>&1
 log "mmi re-ranked"
 translate 1 "$S" "$OUT/dc.txt" -src "$DATA/test.src" -dc_model "$RUN/dc"
 translate 1 "$S" "$OUT/nbest_dc.txt" -src "$DATA/test.src" -dc_model "$RUN/dc" -n_best 10
 CUDA_VISIBLE_DEVICES=1 python -m onmt_mirror.rerank score --src "$DATA/test.src" \
     --nbest "$OUT/nbest_dc.txt" --n-best 10 --forward "$S" --backward "$B" \
     --output "$OUT/dcmmi_test.tsv" >> "$OUT/rerank.log" 2>&1
 python -m onmt_mirror.rerank apply --scores "$OUT/dcmmi_test.tsv" --params "$OUT/mmi.json" \
     --output "$OUT/dc_mmi.txt" >> "$OUT/rerank.log" 2>&1
 log "dc and dc-mmi decoded") &
wait
grep -h "^\[.*Mirror step\|^\[.*Step \|Mirror validation\|Validation perplexity" \
    "$OUT"/*.train.log > "$OUT/curves.log" 2>/dev/null
wc -l "$OUT"/*.txt
hyps=()
for f in mirror mirror_zsample seq2seq cvae hred mmi dc dc_mmi; do
    [ -s "$OUT/$f.txt" ] && hyps+=(--hyp "$f=$OUT/$f.txt")
done
python -m onmt_mirror.evaluate --ref "$DATA/test.tgt" --src "$DATA/test.src" "${hyps[@]}" \
    --json "$OUT/scores.json" --markdown "$OUT/scores.md" --plot "$OUT/scores.png" \
    || log "no evaluator here (pip install '.[eval]'); the predictions are in $OUT"
