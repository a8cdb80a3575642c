#!/usr/bin/env bash
# The README's demo: the stock OpenNMT-py commands, with the plugin. First a tiny Mirror is
# trained on the bundled DailyDialog slice (examples/demo/data, 1,606 training windows; a
# few minutes on a laptop CPU) to show training; it is far too small to say much. Then the
# same decoding commands talk with examples/demo/chat_model.pt, a small Mirror trained on
# the whole of DailyDialog on a GPU (results/chat_model.yaml has the command), one reply
# with z = the prior mean and three with z sampled from the prior.
# `make demo` runs it inside .venv. Each command's own output goes to a log under run/demo/;
# the screen gets a line per stage and the replies.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOGS=run/demo
mkdir -p $LOGS

stage() {  # stage TEXT LOG COMMAND...: COMMAND's output into LOG, one line with its time
    local text=$1 log=$2 start=$SECONDS
    shift 2
    if ! "$@" >"$log" 2>&1; then
        echo "$text: failed after $((SECONDS - start)) s; the end of $log:"
        tail -n 20 "$log"
        exit 1
    fi
    printf '%-46s %4d s   %s\n' "$text" $((SECONDS - start)) "$log"
}
ppl() {  # ppl LOG first|last: a training report's step and perplexity
    grep -E "Step +[0-9]+/" "$1" | { [ "$2" = first ] && head -n1 || tail -n1; } |
        sed -E 's/.*Step +([0-9]+)\/.*; ppl: +([0-9.]+);.*/step \1 perplexity \2/'
}

echo "== a tiny Mirror trained here on the bundled slice (logs in $LOGS/)"
stage "vocabulary (onmt_build_vocab)" $LOGS/vocab.log \
    onmt_build_vocab -config examples/demo/mirror.yaml -n_sample -1
stage "training, 500 steps (onmt_train)" $LOGS/train.out \
    onmt_train -config examples/demo/mirror.yaml -log_file $LOGS/train.log
echo "    training: $(ppl $LOGS/train.log first) -> $(ppl $LOGS/train.log last);" \
    "validation perplexity $(grep -o 'Validation perplexity: [0-9.]*' $LOGS/train.log |
                             tail -n1 | cut -d' ' -f3)"
CKPT=$(ls -v $LOGS/model_step_*.pt | tail -n1)
DECODE=(-beam_size 10 -max_length 40 -min_length 3 -length_penalty none)
stage "decoding the test lines (onmt_translate)" $LOGS/translate.log \
    onmt_translate -model "$CKPT" -src examples/demo/data/test.src -output $LOGS/pred.txt \
    "${DECODE[@]}" -mirror_z mean
echo
echo "== its replies (context __eou__ query => reply; test lines 44-49)"
paste -d '\t' examples/demo/data/test.src $LOGS/pred.txt \
    | awk -F '\t' 'NR >= 44 && NR <= 49 {printf "%s\n    => %s\n", $1, $2}'

CHAT=examples/demo/chat_model.pt  # -ban_unk_token: the stock option that never emits <unk>
sed -n 44,49p examples/demo/data/test.src > $LOGS/chat.src  # one dialogue, no <unk>
echo
echo "== $CHAT (DailyDialog, trained on a GPU)"
stage "decoding with z = the prior mean" $LOGS/chat_mean.log \
    onmt_translate -model $CHAT -src $LOGS/chat.src -output $LOGS/chat_mean.txt \
    "${DECODE[@]}" -ban_unk_token -mirror_z mean
stage "decoding with 3 samples of z" $LOGS/chat_samples.log \
    onmt_translate -model $CHAT -src $LOGS/chat.src -output $LOGS/chat_samples.txt \
    "${DECODE[@]}" -ban_unk_token -mirror_num_z 3 -seed 7
echo
awk 'FNR == 1 {f++} f == 1 {src[FNR] = $0} f == 2 {mean[FNR] = $0}
     f == 3 {s[int((FNR - 1) / 3) + 1] = s[int((FNR - 1) / 3) + 1] "\n      z ~ p(z|c): " $0}
     END {for (i = 1; i <= length(src); i++)
              printf "%s\n      z = mean:   %s%s\n", src[i], mean[i], s[i]}' \
    $LOGS/chat.src $LOGS/chat_mean.txt $LOGS/chat_samples.txt
echo
echo "Talk with it:  python -m onmt_mirror.chat --cli -model $CHAT -ban_unk_token"
