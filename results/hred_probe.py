"""Does an HRED checkpoint's decoder depend on the dialogue? (docs/results.md, "HRED")

    python results/hred_probe.py CKPT SRC TGT [N]

On the first N windows: how much the context vector and the decoder's initial state vary
across windows, how many bridge pre-activations sit where tanh is flat (|a| > 3: no
gradient reaches the encoder), and the teacher-forced NLL per token of the references
with the true contexts and with the contexts shuffled across windows.
"""
import sys

import torch

import onmt  # noqa: F401  (registers the plugin)
from onmt.model_builder import load_test_model

from onmt_mirror.dialogue import QUERY_TOKEN, split_line
from onmt_mirror.rerank.scorer import translate_opt


def ids(vocab, words):
    return [vocab[w] if w in vocab.ids_to_tokens else vocab["<unk>"] for w in words]


def padded(rows, pad):
    width = max(map(len, rows))
    return (torch.tensor([r + [pad] * (width - len(r)) for r in rows])[:, :, None],
            torch.tensor([len(r) for r in rows]))


def main(ckpt, src_path, tgt_path, n=64):
    vocabs, model, _ = load_test_model(translate_opt(ckpt, -1))
    model.eval()
    vocab = vocabs["src"]
    pad = vocab["<blank>"]
    with open(src_path, encoding="utf-8") as f:
        windows = [split_line(line)[-2:] for _, line in zip(range(n), f)]
    with open(tgt_path, encoding="utf-8") as f:
        refs = [line.split() for _, line in zip(range(n), f)]
    src, src_len = padded([ids(vocab, c + [QUERY_TOKEN] + x)
                           for c, x in windows], pad)
    tgt, _ = padded([ids(vocab, ["<s>"] + r + ["</s>"]) for r in refs], pad)
    enc = model.encoder
    with torch.no_grad():
        _, ctx = enc.context(enc.embeddings(src), src_len, src[:, :, 0])
        pre = enc.bridge(ctx)
        print("context vector: mean |v| %.3f, std across windows %.4f"
              % (ctx.abs().mean(), ctx.std(0).mean()))
        print("bridge pre-activation: mean |a| %.3f, share |a| > 3 %.3f"
              % (pre.abs().mean(), (pre.abs() > 3).float().mean()))
        print("initial state tanh(a): std across windows %.4f" % torch.tanh(pre).std(0).mean())

        def nll(s, s_len):
            out, _ = model(s, tgt, s_len)
            logp = torch.log_softmax(model.generator(out), -1)
            gold = tgt[:, 1:, 0]
            real = gold.ne(pad)
            return -(logp.gather(-1, gold[..., None])[..., 0] * real).sum() / real.sum()

        shift = torch.roll(torch.arange(len(windows)), 1)
        print("teacher-forced NLL per token: true contexts %.4f, shuffled %.4f"
              % (nll(src, src_len), nll(src[shift], src_len[shift])))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:5]))
