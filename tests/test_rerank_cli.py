"""MMI-bidi and Mirror-Dec3 re-ranking end to end: onmt_translate -n_best, then
`python -m onmt_mirror.rerank score / tune / apply` with tiny trained checkpoints; and the
scorers checked against the beam's own scores and against Mirror's training loss."""
import argparse
import json
import re

import torch

from conftest import PAD, tiny_config
from onmt_mirror.models.mirror import MirrorModel
from onmt_mirror.rerank import nbest as nb
from onmt_mirror.rerank.scorer import CheckpointScorer
from test_baselines_cli import DIALOGUES, run, train, work  # noqa: F401  (fixture)

N_BEST = 3


def nbest(work, ckpt, out):  # noqa: F811
    proc = run(["onmt_translate", "-model", str(ckpt), "-src", "train.src", "-output", out,
                "-beam_size", str(N_BEST), "-n_best", str(N_BEST), "-max_length", "10",
                "-length_penalty", "none", "-verbose"], work)
    return [float(s) for s in re.findall(r"(?m)^PRED SCORE: (-?[\d.]+)$", proc.stderr)]


def rerank(work, *args):  # noqa: F811
    return run(["python", "-m", "onmt_mirror.rerank"] + list(args), work).stdout


def test_mmi_bidi_rerank_with_a_backward_model(work):  # noqa: F811
    fwd, bwd = train(work, "seq2seq"), train(work, "mmi_backward")
    beam_best = nbest(work, fwd, "nbest.txt")
    assert len(beam_best) == len(DIALOGUES)
    out = rerank(work, "score", "--src", "train.src", "--nbest", "nbest.txt",
                 "--n-best", str(N_BEST), "--forward", str(fwd), "--backward", str(bwd),
                 "--output", "scores.tsv", "--batch-size", "4")
    assert "backward scorer mmi" in out
    groups = nb.read_scores(work / "scores.tsv")
    assert [len(g) for g in groups] == [N_BEST] * len(DIALOGUES)
    # the teacher-forced forward score of the beam's best is the beam's own score
    for g, beam in zip(groups, beam_best):
        assert abs(g[0]["fwd"] - beam) < 2e-4
    for g in groups:
        assert all(r["bwd"] < 0 and r["fwd"] < 0 for r in g)
    rerank(work, "tune", "--scores", "scores.tsv", "--ref", "train.tgt", "--lambdas",
           "0:1:0.5", "--gammas=-0.5:0.5:0.5", "--output", "mmi.json")
    params = json.loads((work / "mmi.json").read_text())
    assert len(params["grid"]) == 9 and params["value"] >= params["forward_only_value"]
    rerank(work, "apply", "--scores", "scores.tsv", "--params", "mmi.json", "--output",
           "mmi.txt")
    chosen = (work / "mmi.txt").read_text().splitlines()
    expected = nb.rerank(groups, params["lambda"], params["gamma"])
    assert chosen == expected and len(chosen) == len(DIALOGUES)


def test_mirror_dec3_rerank(work):  # noqa: F811
    mirror = train(work, "mirror")
    nbest(work, mirror, "nbest_mirror.txt")
    out = rerank(work, "score", "--src", "train.src", "--nbest", "nbest_mirror.txt",
                 "--forward", str(mirror), "--backward", str(mirror), "--output",
                 "scores_dec3.tsv")
    assert "backward scorer dec3" in out
    groups = nb.read_scores(work / "scores_dec3.tsv")
    assert all(r["bwd"] < 0 for g in groups for r in g)
    rerank(work, "apply", "--scores", "scores_dec3.tsv", "--lambda", "1", "--gamma", "0",
           "--output", "dec3.txt")
    assert len((work / "dec3.txt").read_text().splitlines()) == len(DIALOGUES)


class Fixed(torch.nn.Module):
    """A Gaussian net that ignores its input: makes posterior and prior means equal."""

    def __init__(self, mean):
        super().__init__()
        self.m = mean

    def forward(self, inputs):
        mean = self.m.expand(inputs.size(0), -1)
        return mean, torch.zeros_like(mean)


def test_dec3_score_is_minus_dec3_training_nll():
    """log p(x|c,z,y) from the scorer == -NLL of Dec3 in MirrorModel.forward, same z."""
    import pyonmttok

    torch.manual_seed(0)
    cfg = tiny_config()
    model = MirrorModel(cfg)
    for p in model.parameters():
        torch.nn.init.uniform_(p, -0.3, 0.3)
    mean = torch.randn(1, cfg.z_size)
    model.prior_net, model.posterior_net = Fixed(mean), Fixed(mean)
    words = ["<unk>", "<blank>", "<s>", "</s>", "｟mirror_query｠"] + \
        ["w%d" % i for i in range(5, cfg.vocab_size)]
    vocab = pyonmttok.build_vocab_from_tokens(words, maximum_size=0, minimum_frequency=0,
                                              special_tokens=[])
    assert vocab["<blank>"] == PAD
    opt = argparse.Namespace(_all_transform={"mirror_triple"}, mirror_turn_sep="__eou__",
                             mirror_context_turns=1, mirror_max_context_tokens=100,
                             mirror_max_utterance_tokens=45, mirror_bad_line="error",
                             seed=-1)
    scorer = CheckpointScorer(model, {"src": vocab, "tgt": vocab}, opt, batch_size=2)
    assert scorer.kind == "dec3"
    pairs = [("w10 w11 __eou__ w12 w13 w14", "w20 w21"), ("w15 __eou__ w16", "w22"),
             ("w30 w31 w32 __eou__ w33", "w34 w35 w36 w37")]
    scores = scorer.score(pairs)
    model.eval()
    for (history, y), score in zip(pairs, scores):
        c, x = history.split(" __eou__ ")
        src_tokens = c.split() + ["｟mirror_query｠"] + x.split()
        src = torch.tensor([vocab(src_tokens)])[:, :, None]
        tgt = torch.tensor([vocab(["<s>"] + y.split() + ["</s>"])])[:, :, None]
        with torch.no_grad():
            _, attns = model(src, tgt, torch.tensor([len(src_tokens)]))
        assert abs(score + float(attns["mirror"]["nll_x_cyz"])) < 1e-4
    # batching does not change a score
    assert abs(scorer.score(pairs[1:2])[0] - scores[1]) < 1e-5
