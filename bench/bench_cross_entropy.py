"""The output layer's loss: the plugin's Triton cross-entropy against the libraries that
fuse the linear layer and never build the (tokens x 20k) logits.

Each method computes forward + backward of sum CE(h W^T + b, gold) for h fp16 (N x 1000)
and W (20,000 x 1000), b the fp32 master weights, cast as autocast casts them: F.cross_entropy
on fp32 logits, the plugin's kernel (losses/fused_cross_entropy.py), liger-kernel's
LigerFusedLinearCrossEntropyLoss and cut-cross-entropy's linear_cross_entropy, where
installed. Reported: median time of --repeat runs (CUDA events), peak memory above the
inputs, and loss and gradient errors against fp32 arithmetic on the same inputs.

    python3 bench/bench_cross_entropy.py --out OUT [--tokens 8192 32768]
"""
import argparse
import json
import os
import statistics

import torch
import torch.nn.functional as F

from onmt_mirror.losses import fused_cross_entropy as fce

HIDDEN, VOCAB = 1000, 20000  # Mirror's paper size (bench/bench_train.py's SIZES)


def ce_methods():
    """name -> f(h, W, b, gold) -> summed loss; h fp16 (N, H), W and b the fp32 master
    weights (each method casts them as autocast would)."""
    methods = {}

    def stock(h, W, b, gold):
        with torch.autocast("cuda", torch.float16):
            logits = F.linear(h, W, b)
        return F.cross_entropy(logits.float(), gold, reduction="sum")

    def triton_ce(h, W, b, gold):
        with torch.autocast("cuda", torch.float16):
            logits = F.linear(h, W, b)
        return fce.cross_entropy_sum(logits, gold)[0]

    methods["F.cross_entropy"] = stock
    methods["triton (plugin)"] = triton_ce
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss(reduction="sum")
        methods["liger FLCE"] = lambda h, W, b, gold: liger(W.half(), h, gold, b.half())
    except ImportError as e:
        print("liger-kernel not available: %s" % e)
    try:
        from cut_cross_entropy import linear_cross_entropy

        def cce(h, W, b, gold):
            # CCE takes no bias: one more input column of ones, padded to 8 columns
            ones = torch.ones(h.size(0), 1, dtype=h.dtype, device=h.device)
            e = F.pad(torch.cat([h, ones], 1), (0, 7))
            c = F.pad(torch.cat([W, b[:, None]], 1), (0, 7)).half()
            return linear_cross_entropy(e, c, gold, reduction="sum")

        methods["cut-cross-entropy"] = cce
    except ImportError as e:
        print("cut-cross-entropy not available: %s" % e)
    return methods


def bench_ce(tokens_list, repeat):
    """Forward+backward median ms (CUDA events), peak memory above the inputs, and
    relative errors of loss and gradients against fp32 arithmetic on the same fp16
    inputs."""
    H, V = HIDDEN, VOCAB
    rows = []
    for N in tokens_list:
        gen = torch.Generator(device="cuda").manual_seed(N)
        h = torch.randn(N, H, device="cuda", generator=gen).half().requires_grad_()
        W = ((torch.rand(V, H, device="cuda", generator=gen) - 0.5) * 0.16).requires_grad_()
        b = ((torch.rand(V, device="cuda", generator=gen) - 0.5) * 0.16).requires_grad_()
        gold = torch.randint(4, V, (N,), device="cuda", generator=gen)
        h32, W32, b32 = (t.detach().half().float().requires_grad_() for t in (h, W, b))
        ref = F.cross_entropy(F.linear(h32, W32, b32), gold, reduction="sum")
        ref.backward()
        refs = [ref.detach(), h32.grad, W32.grad, b32.grad]
        for name, f in ce_methods().items():
            row = {"tokens": N, "method": name}
            try:
                for t in (h, W, b):
                    t.grad = None
                loss = f(h, W, b, gold)
                loss.backward()
                got = [loss.detach().float(), h.grad.float(), W.grad, b.grad]
                row.update({"rel_err_" + k: float((g - r).norm() / r.norm())
                            for k, g, r in zip(("loss", "dh", "dW", "db"), got, refs)})
                times = []
                for i in range(repeat + 3):
                    for t in (h, W, b):
                        t.grad = None
                    start, end = torch.cuda.Event(True), torch.cuda.Event(True)
                    start.record()
                    f(h, W, b, gold).backward()
                    end.record()
                    end.synchronize()
                    if i >= 3:
                        times.append(start.elapsed_time(end))
                row["ms"] = statistics.median(times)
                for t in (h, W, b):
                    t.grad = None
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                f(h, W, b, gold).backward()
                torch.cuda.synchronize()
                row["peak_extra_gib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 30
            except Exception as e:  # a library that fails here is a result, not a crash
                row["error"] = "%s: %s" % (type(e).__name__, str(e)[:300])
            print("%s" % json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tokens", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_cross_entropy.py: needs a CUDA GPU")
    os.makedirs(args.out, exist_ok=True)
    rows = bench_ce(args.tokens, args.repeat)
    with open(os.path.join(args.out, "bench_cross_entropy.json"), "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                   "rows": rows}, f, indent=1)
    print("\n| tokens | method | ms fwd+bwd | peak GiB | loss err | dh err | dW err |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %d | %s | %s | %s | %s | %s | %s |" % (
            r["tokens"], r["method"], "%.2f" % r["ms"] if "ms" in r else r.get("error"),
            "%.2f" % r["peak_extra_gib"] if "peak_extra_gib" in r else "-",
            *("%.1e" % r[k] if k in r else "-" for k in ("rel_err_loss", "rel_err_dh",
                                                          "rel_err_dW"))))


if __name__ == "__main__":
    main()
