"""python bench/bench_dc.py: the DC scorer's cost per beam step.

Times the core of a stock beam step (add the running scores, top-k over beam x vocabulary,
back-pointers) on random log-probs, without and with the DC scorer's bonus() and advance(),
at the paper's decoding sizes by default. Needs torch and numpy only (no OpenNMT-py), so it
runs as is on a bare GPU machine. Random side models: only the shapes matter.
"""
import argparse
import time

import numpy as np
import torch

from onmt_mirror.dc.scorer import DCScorer
from onmt_mirror.dc.side_models import SideModels


def step_time(scorer, batch, beam, vocab, log_probs, dc, device):
    state = scorer.start(torch.randint(4, vocab, (batch, 20), device=device), beam) \
        if dc else None
    cum = torch.zeros(batch, beam, device=device)
    offset = torch.arange(batch, device=device)[:, None] * beam
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for lp in log_probs:
        lp = lp.clone()
        if dc:
            lp += state.bonus()
        lp += cum.view(-1, 1)
        cum, ids = lp.view(batch, -1).topk(beam, -1)
        if dc:
            state.advance((ids // vocab + offset).view(-1), (ids % vocab).view(-1))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(log_probs)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--vocab", type=int, default=20000)
    p.add_argument("--topics", type=int, default=50)
    p.add_argument("--dim", type=int, default=200)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    words = ["w%d" % i for i in range(args.vocab)]
    side = SideModels({"lowercase": False}, words,
                      rng.dirichlet(np.ones(args.topics), args.vocab).astype(np.float32),
                      words, rng.normal(size=(args.vocab, args.dim)).astype(np.float32))
    scorer = DCScorer(side, words, words, 1.5, 2.0).to(device)
    log_probs = [torch.randn(args.batch * args.beam, args.vocab, device=device)
                 .log_softmax(-1) for _ in range(args.steps)]
    with torch.no_grad():
        step_time(scorer, args.batch, args.beam, args.vocab, log_probs[:3], True, device)
        stock = min(step_time(scorer, args.batch, args.beam, args.vocab, log_probs, False,
                              device) for _ in range(3))
        dc = min(step_time(scorer, args.batch, args.beam, args.vocab, log_probs, True,
                           device) for _ in range(3))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print("%s, batch %d x beam %d, V %d, K %d, D %d: beam step %.3f ms, with DC %.3f ms "
          "(+%.3f ms)" % (name, args.batch, args.beam, args.vocab, args.topics, args.dim,
                          1e3 * stock, 1e3 * dc, 1e3 * (dc - stock)))


if __name__ == "__main__":
    main()
