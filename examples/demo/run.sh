#!/usr/bin/env bash
# The README's demo: the stock OpenNMT-py commands, with the plugin. First a tiny Mirror is
# trained on the bundled DailyDialog slice (examples/demo/data, 1,606 training windows; a
# few minutes on a laptop CPU) to show training; it is far too small to say much. Then the
# same decoding commands talk with examples/demo/chat_model.pt, a small Mirror trained on
# the whole of DailyDialog on a GPU (results/chat_model.yaml has the command), one reply
# with z = the prior mean and three with z sampled from the prior.
# `make demo` runs it inside .venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p run/demo
onmt_build_vocab -config examples/demo/mirror.yaml -n_sample -1
onmt_train -config examples/demo/mirror.yaml
CKPT=$(ls -v run/demo/model_step_*.pt | tail -n1)
DECODE=(-beam_size 10 -max_length 40 -min_length 3 -length_penalty none)
onmt_translate -model "$CKPT" -src examples/demo/data/test.src -output run/demo/pred.txt \
    "${DECODE[@]}" -mirror_z mean
echo
echo "== the tiny model just trained (context __eou__ query => reply; test lines 44-49)"
paste -d '\t' examples/demo/data/test.src run/demo/pred.txt \
    | awk -F '\t' 'NR >= 44 && NR <= 49 {printf "%s\n    => %s\n", $1, $2}'

CHAT=examples/demo/chat_model.pt  # -ban_unk_token: the stock option that never emits <unk>
sed -n 44,49p examples/demo/data/test.src > run/demo/chat.src  # one dialogue, no <unk>
onmt_translate -model $CHAT -src run/demo/chat.src -output run/demo/chat_mean.txt \
    "${DECODE[@]}" -ban_unk_token -mirror_z mean
onmt_translate -model $CHAT -src run/demo/chat.src -output run/demo/chat_samples.txt \
    "${DECODE[@]}" -ban_unk_token -mirror_num_z 3 -seed 7
echo
echo "== $CHAT (DailyDialog, trained on a GPU): z = the prior mean, then 3 prior samples"
awk 'FNR == 1 {f++} f == 1 {src[FNR] = $0} f == 2 {mean[FNR] = $0}
     f == 3 {s[int((FNR - 1) / 3) + 1] = s[int((FNR - 1) / 3) + 1] "\n      z ~ p(z|c): " $0}
     END {for (i = 1; i <= length(src); i++)
              printf "%s\n      z = mean:   %s%s\n", src[i], mean[i], s[i]}' \
    run/demo/chat.src run/demo/chat_mean.txt run/demo/chat_samples.txt
echo
echo "Talk with it:  python -m onmt_mirror.chat --cli -model $CHAT -ban_unk_token"
