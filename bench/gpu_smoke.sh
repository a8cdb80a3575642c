#!/usr/bin/env bash
# The GPU smoke run: every GPU path of the package, end to end, at the paper's sizes, in one
# command of about 8 minutes on one H100 or H200 (docs/gpu.md). From the repository root:
#
#     bash bench/gpu_smoke.sh [RAW_DAILYDIALOG_DIR] [WORK]
#
# RAW_DAILYDIALOG_DIR holds DailyDialog's dialogues_{train,validation,test}.txt (default
# data/raw/dailydialog; skipped when data/dailydialog is prepared already); WORK defaults to
# run/gpu_smoke and is emptied first. With a .whl/ folder of wheels (docs/performance.md)
# they and this package are installed first. One PASS/FAIL line a part, then a summary line;
# exit status 1 if any part failed. Parts:
#   data      the prepared windows and the recipe's 20k vocabulary
#   train     examples/dailydialog/mirror.yaml for 2 epochs (2 validations, 2 checkpoints,
#             the best-checkpoint copy), captured step; peak GPU memory
#   resume    -train_from the last checkpoint, one more epoch
#   decode    500 test windows with the captured beam, z = the prior mean
#   rerank    the same with -mirror_num_z 4 -mirror_rerank
#   cap24     the recipe for one epoch and a validation under a 24 GB memory cap
#   cvae      examples/dailydialog/cvae.yaml through one validation
#   tests     every test file of tests/ that has CUDA tests
set -uo pipefail
RAW=${1:-data/raw/dailydialog}
W=${2:-run/gpu_smoke}
DATA=data/dailydialog
EPOCH=507  # steps of an epoch of the recipe (64,935 windows at batch 128)
rm -rf "$W" && mkdir -p "$W"
RESULTS=()

part() {  # part NAME OK DETAIL
    local verdict=FAIL
    [ "$2" = 0 ] && verdict=PASS
    RESULTS+=("$verdict")
    printf 'gpu_smoke %-7s %s  %s\n' "$1" "$verdict" "$3"
}
count() { grep -c "$1" "$2" 2>/dev/null || true; }
peak() { grep -h "^peak GPU memory" "$1" | tail -n1; }

# the plugin is imported from this tree; the .pth hook (installed with the wheels) loads it
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl &&
        cp onmt_mirror.pth "$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || exit 1
fi
# OpenNMT-py imports every transform at start-up; only its clean and terminology
# transforms need spacy and fasttext, which a GPU image may lack: empty modules do
python3 -c "import spacy, fasttext" 2>/dev/null || {
    mkdir -p "$W/shim" && touch "$W/shim/spacy.py" "$W/shim/fasttext.py"
    export PYTHONPATH="$PWD/$W/shim${PYTHONPATH:+:$PYTHONPATH}"
}
DEVICE=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))") || exit 1
export PYTHONUNBUFFERED=1

# onmt_train in this process, printing its peak GPU memory (graphs' pools included) at exit
cat > "$W/train.py" <<'PY'
import atexit, sys
import torch
if __name__ == "__main__":
    atexit.register(lambda: print("peak GPU memory: allocated %.1f GB, reserved %.1f GB" % (
        torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30)))
    from onmt.bin.train import main
    sys.argv[0] = "onmt_train"
    main()
PY
train() {  # train LOG ARGS...: the run's stdout and stderr go to LOG.out
    local log=$1; shift
    python3 "$W/train.py" -log_file "$log" -src_vocab "$W/vocab.txt" "$@" \
        >"$log.out" 2>&1
}
last_lines() { tail -n 5 "$1" | tr '\n' ' ' | cut -c1-300; }

# data
ok=0
if [ ! -s $DATA/train.src ]; then
    python3 -m onmt_mirror.prepare dailydialog --input "$RAW" --output $DATA \
        >"$W/prepare.out" 2>&1 || ok=1
fi
[ $ok = 0 ] && { onmt_build_vocab -config examples/dailydialog/mirror.yaml -n_sample -1 \
    -src_vocab "$W/vocab.txt" -save_data "$W/samples" >"$W/vocab.out" 2>&1 || ok=1; }
part data $ok "$(wc -l <$DATA/train.src 2>/dev/null) train windows, $(wc -l <"$W/vocab.txt" 2>/dev/null) vocabulary lines"

# train: the recipe's own validation and checkpoint schedule, two epochs
start=$SECONDS
train "$W/mirror.log" -config examples/dailydialog/mirror.yaml -save_model "$W/mirror" \
    -train_steps $((2 * EPOCH)) -early_stopping 0
rc=$?
valid=$(count "Validation perplexity" "$W/mirror.log")
saved=$(count "Saving checkpoint" "$W/mirror.log")
best=$(ls -v "$W"/mirror_best_step_*.pt 2>/dev/null | tail -n1)
ok=1
[ $rc = 0 ] && [ "$valid" -ge 2 ] && [ "$saved" -ge 2 ] && [ -n "$best" ] &&
    grep -q "replayed from CUDA graphs" "$W/mirror.log" && ok=0
part train $ok "rc $rc, $valid validations, $saved checkpoints, best ${best##*/}, $((SECONDS - start)) s; $(peak "$W/mirror.log.out")$([ $ok = 0 ] || last_lines "$W/mirror.log.out")"

# resume: one more epoch from the last checkpoint
start=$SECONDS
train "$W/resume.log" -config examples/dailydialog/mirror.yaml -save_model "$W/mirror" \
    -train_from "$W/mirror_step_$((2 * EPOCH)).pt" -train_steps $((3 * EPOCH)) -early_stopping 0
rc=$?
ok=1
[ $rc = 0 ] && grep -q "Resuming: skipping" "$W/resume.log" &&
    [ -s "$W/mirror_step_$((3 * EPOCH)).pt" ] && ok=0
part resume $ok "rc $rc, $(count "Validation perplexity" "$W/resume.log") validations, $((SECONDS - start)) s$([ $ok = 0 ] || last_lines "$W/resume.log.out")"

# decode and rerank: 500 test windows from the best checkpoint
head -n 500 $DATA/test.src >"$W/test500.src"
for mode in decode rerank; do
    extra=()
    [ $mode = rerank ] && extra=(-mirror_num_z 4 -mirror_rerank)
    start=$SECONDS
    onmt_translate -config examples/dailydialog/decode.yaml -model "$best" -gpu 0 \
        -src "$W/test500.src" -output "$W/$mode.txt" -log_file "$W/$mode.log" "${extra[@]}" \
        >"$W/$mode.out" 2>&1
    rc=$?
    lines=$(wc -l <"$W/$mode.txt" 2>/dev/null || echo 0)
    ok=1
    [ $rc = 0 ] && [ "$lines" = 500 ] && ok=0
    [ $mode = decode ] && ! grep -q "replayed from CUDA graphs" "$W/$mode.log" && ok=1
    part $mode $ok "rc $rc, $lines replies, $((SECONDS - start)) s, $(grep -m1 "Mirror beam search" "$W/$mode.log" | sed 's/.*Mirror beam search: //' | cut -c1-60)$([ $ok = 0 ] || last_lines "$W/$mode.out")"
done

# cap24: the recipe under a 24 GB card's memory
start=$SECONDS
train "$W/cap24.log" -config examples/dailydialog/mirror.yaml -mirror_gpu_memory_gb 24 \
    -save_model "$W/cap24" -train_steps $EPOCH -early_stopping 0
rc=$?
ok=1
[ $rc = 0 ] && [ "$(count "Validation perplexity" "$W/cap24.log")" -ge 1 ] && ok=0
part cap24 $ok "rc $rc, $((SECONDS - start)) s; $(peak "$W/cap24.log.out"); $(grep -h "run eagerly" "$W/cap24.log" | tail -n1 | sed 's/.*INFO\] //')$([ $ok = 0 ] || last_lines "$W/cap24.log.out")"

# cvae
start=$SECONDS
train "$W/cvae.log" -config examples/dailydialog/cvae.yaml -save_model "$W/cvae" \
    -train_steps 200 -valid_steps 200 -save_checkpoint_steps 200 -early_stopping 0
rc=$?
ok=1
[ $rc = 0 ] && [ "$(count "Validation perplexity" "$W/cvae.log")" -ge 1 ] && ok=0
part cvae $ok "rc $rc, $((SECONDS - start)) s; $(peak "$W/cvae.log.out")$([ $ok = 0 ] || last_lines "$W/cvae.log.out")"

# tests: every file with CUDA tests, whole
start=$SECONDS
python3 -m pytest -q -p no:cacheprovider $(grep -l "cuda.is_available" tests/test_*.py) \
    >"$W/tests.out" 2>&1
rc=$?
part tests $rc "$(tail -n1 "$W/tests.out"), $((SECONDS - start)) s"

passed=$(printf '%s\n' "${RESULTS[@]}" | grep -c PASS)
echo "gpu_smoke summary: ${passed}/${#RESULTS[@]} PASS on $DEVICE, $(git rev-parse --short HEAD 2>/dev/null || echo "tree") $(date -u +%F)"
[ "$passed" = "${#RESULTS[@]}" ]
