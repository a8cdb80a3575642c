#!/usr/bin/env bash
# The README's demo: the stock OpenNMT-py commands, with the plugin, on the bundled
# DailyDialog slice (examples/demo/data, 1,606 training windows). A few minutes on a laptop
# CPU; `make demo` runs it inside .venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p run/demo
onmt_build_vocab -config examples/demo/mirror.yaml -n_sample -1
onmt_train -config examples/demo/mirror.yaml
CKPT=$(ls -v run/demo/model_step_*.pt | tail -n1)
onmt_translate -model "$CKPT" -src examples/demo/data/test.src -output run/demo/pred.txt \
    -beam_size 10 -max_length 40 -min_length 3 -length_penalty none -mirror_z mean
onmt_translate -model "$CKPT" -src examples/demo/data/test.src -output run/demo/pred_sample.txt \
    -beam_size 10 -max_length 40 -min_length 3 -length_penalty none -mirror_z sample -seed 7
echo
echo "== first responses (context __eou__ query  =>  z = prior mean | z sampled)"
paste -d '\t' examples/demo/data/test.src run/demo/pred.txt run/demo/pred_sample.txt \
    | awk -F '\t' 'NR <= 8 {printf "%s\n    => %s | %s\n", $1, $2, $3}'
