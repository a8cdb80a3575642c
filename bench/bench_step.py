"""Mirror's training step eager, captured in CUDA graphs, and compiled, side by side (issue 20).

The measurement half of issue 20, one process, one GPU, real DailyDialog batches:
 (a) eager: the stock Trainer._gradient_accumulation, as bench/bench_train.py times it;
 (b) graph: forward, Mirror's loss, backward, clipping and fused Adam captured in one CUDA
     graph per length bucket, with fp16 + GradScaler and with bf16 autocast (no scaler);
 (c) compile: torch.compile(mode="reduce-overhead") of the same forward and loss, eager
     clipping and Adam, given up after --compile-limit seconds;
 (d) the output layer's loss on (tokens x 1000) hidden states and a (20,000 x 1000) weight:
     the plugin's Triton cross-entropy, liger-kernel's fused linear cross-entropy,
     cut-cross-entropy and plain F.cross_entropy, forward + backward time, peak memory, and
     their losses and gradients against an fp32 reference;
 (e) the padded-bucket step's loss against the eager model's on the same batch (dropout off,
     one seed, fp32): an assertion, run before anything is timed.

Why the captured step is not MirrorModel.forward: that forward packs its encoders with host
lengths (PackPlan, one sync a batch) and gathers the output layers' real tokens into a tensor
of data-dependent size, so no graph can replay it. `static_terms` computes the same terms
from the same modules with shapes fixed by the bucket: each batch is padded on the host to
bucket widths of c, x and y, and the real output tokens are gathered through an index padded
to a bucket capacity, whose extra rows get weight 0. The encoders' final states must come
from each row's own last token: their LSTM layers run one cuDNN call each over the padded
batch (outputs at real positions do not see the padding after them), h is read at each
row's last token, and c there is recomputed from the same gates in closed form
(c_T = sum_s prod_{s<r<=T} f_r * i_s g_s, through a cumulative sum of log f), which gives the
exact value and gradient at the cost of one more gate GEMM per encoder layer.

    python3 bench/bench_step.py --data data/dailydialog --vocab run/dailydialog/vocab.txt \
        --out OUT [--batches 128 512]
"""
import argparse
import copy
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train as bt  # noqa: E402  (also loads the plugin through the .pth hook)

from onmt_mirror.losses import fused_cross_entropy as fce  # noqa: E402
from onmt_mirror.modules.gaussian import (free_bits_kl, gaussian_kl_dims,  # noqa: E402
                                          reparameterize)
from onmt_mirror.modules.padding import lengths_to_mask  # noqa: E402

# Bucket widths: c runs to 100 tokens, x and y to 45 (the recipe's truncation), plus </s>.
C_WIDTHS = (8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 100)
U_WIDTHS = (8, 12, 16, 20, 24, 28, 32, 40, 46)
CAP_RATIO = 1.25  # output-token capacities grow by this factor (at most 25% padded rows)


def ceil_to(n, ladder):
    return next(w for w in ladder if w >= n)


def capacity(n, quantum):
    """Smallest step of a geometric ladder of multiples of `quantum` holding n rows."""
    cap = quantum
    while cap < n:
        cap = int(math.ceil(cap * CAP_RATIO / quantum)) * quantum
    return cap


# -- (e)/(b): the batch padded to a bucket ----------------------------------------------
FIELDS = ("c", "c_len", "x", "x_len", "y", "y_len", "x_in", "x_gold", "y_in", "y_gold",
          "idx_x", "idx_y", "n")


def bucket_batch(batch, cfg, quantum):
    """An OpenNMT-py batch -> (key, flat int64 tensor on the host) of every input the
    captured step reads, padded to the bucket's widths. The same split as split_src and
    MirrorModel.forward (empty fields read one pad token), done where the data pipeline
    would do it."""
    pad, q = cfg.pad_id, cfg.query_id
    src, src_len = batch["src"][:, :, 0].cpu(), batch["srclen"].cpu()
    tgt = batch["tgt"][:, :, 0].cpu()
    B = src.size(0)
    q_pos = (src == q).int().argmax(1)
    c_len = q_pos.clamp(min=1)
    x_len = (src_len - q_pos - 1).clamp(min=1)
    y = tgt[:, 1:].masked_fill(tgt[:, 1:].eq(cfg.eos_id), pad)
    y_len = y.ne(pad).sum(1).clamp(min=1)
    Tc, Tx = ceil_to(int(c_len.max()), C_WIDTHS), ceil_to(int(x_len.max()), U_WIDTHS)
    Ty = ceil_to(int(y_len.max()), U_WIDTHS)

    def fit(t, width):
        return F.pad(t, (0, width - t.size(1)), value=pad) if t.size(1) < width \
            else t[:, :width]

    c = fit(src, Tc).masked_fill(~lengths_to_mask(c_len, Tc), pad)
    idx = (q_pos[:, None] + 1 + torch.arange(Tx)[None, :]).clamp(max=src.size(1) - 1)
    x = src.gather(1, idx).masked_fill(~lengths_to_mask(x_len, Tx), pad)
    y = fit(y, Ty)
    x_in = torch.cat([torch.full((B, 1), cfg.bos_id), x], 1)
    x_gold = torch.cat([x, torch.full((B, 1), pad)], 1).scatter(1, x_len[:, None], cfg.eos_id)
    y_in, y_gold = fit(tgt[:, :-1], Ty + 1), fit(tgt[:, 1:], Ty + 1)
    real = {}
    for side, n, width in (("x", x_len + 1, Tx + 1), ("y", y_len + 1, Ty + 1)):
        real[side] = (torch.arange(width)[None, :] < n[:, None]).reshape(-1).nonzero()[:, 0]
    caps = {s: capacity(real[s].numel(), quantum) for s in "xy"}
    fields = dict(c=c, c_len=c_len, x=x, x_len=x_len, y=y, y_len=y_len, x_in=x_in,
                  x_gold=x_gold, y_in=y_in, y_gold=y_gold,
                  idx_x=F.pad(real["x"], (0, caps["x"] - real["x"].numel())),
                  idx_y=F.pad(real["y"], (0, caps["y"] - real["y"].numel())),
                  n=torch.tensor([real["x"].numel(), real["y"].numel()]))
    key = (B, Tc, Tx, Ty, caps["x"], caps["y"])
    return key, torch.cat([fields[k].reshape(-1).long() for k in FIELDS])


def unflatten(key, flat):
    """The flat buffer's fields as views (inverse of bucket_batch)."""
    B, Tc, Tx, Ty, cx, cy = key
    shapes = dict(c=(B, Tc), c_len=(B,), x=(B, Tx), x_len=(B,), y=(B, Ty), y_len=(B,),
                  x_in=(B, Tx + 1), x_gold=(B, Tx + 1), y_in=(B, Ty + 1),
                  y_gold=(B, Ty + 1), idx_x=(cx,), idx_y=(cy,), n=(2,))
    sizes = [math.prod(shapes[k]) for k in FIELDS]
    return {k: v.view(shapes[k]) for k, v in zip(FIELDS, flat.split(sizes))}


# -- the capture-safe forward -------------------------------------------------------------
def encode_padded(encoder, emb, lengths):
    """RNNEncoder.forward on a padded batch with no host lengths: (B, T, E) -> memory
    (B, T, H), zero at padding, and the sentence vector from each row's final (h, c)."""
    lstm = encoder.lstm
    assert encoder.dirs == 1, "bidirectional encoders are not done here"
    B, T, _ = emb.shape
    keep = lengths_to_mask(lengths, T)[..., None]
    last = (lengths - 1)[:, None, None].expand(B, 1, lstm.hidden_size)
    inp, hs, cs = emb, [], []
    for k in range(lstm.num_layers):
        if k:
            inp = F.dropout(out, lstm.dropout, lstm.training)
        w = [getattr(lstm, n % k) for n in ("weight_ih_l%d", "weight_hh_l%d",
                                            "bias_ih_l%d", "bias_hh_l%d")]
        h0 = inp.new_zeros(1, B, lstm.hidden_size)
        out, _, _ = torch._VF.lstm(inp, (h0, h0), w, True, 1, 0.0, lstm.training, False,
                                   True)
        h_prev = F.pad(out, (0, 0, 1, 0))[:, :-1]
        gates = (F.linear(inp, w[0], w[2]) + F.linear(h_prev, w[1], w[3])).float()
        i, f, g, _ = gates.chunk(4, -1)
        log_f = F.logsigmoid(f).cumsum(1)
        decay = (log_f.gather(1, last) - log_f).masked_fill(~keep, float("-inf")).exp()
        cs.append((decay * torch.sigmoid(i) * torch.tanh(g)).sum(1))
        hs.append(out.gather(1, last)[:, 0])
    vec = encoder.to_vec(torch.cat(hs + cs, -1))
    return out * keep.to(out.dtype), vec


class _MaskedFusedCE(torch.autograd.Function):
    """The plugin's Triton cross-entropy kernel with a weight per row (0 on the rows that
    only fill a bucket's capacity): its own Function returns only the sum."""

    @staticmethod
    def forward(ctx, logits, gold, weight):
        N, V = logits.shape
        nll = torch.empty(N, dtype=torch.float32, device=logits.device)
        argmax = torch.empty(N, dtype=torch.int32, device=logits.device)
        grad = torch.empty_like(logits)
        fce._cross_entropy_rows[(N,)](logits, logits.stride(0), gold, nll, argmax, grad,
                                      V, BLOCK=fce.BLOCK, num_warps=8)
        ctx.save_for_backward(grad, weight)
        ctx.mark_non_differentiable(argmax)
        return (nll * weight).sum(), argmax

    @staticmethod
    def backward(ctx, grad_nll, _):
        grad, weight = ctx.saved_tensors
        return grad * (grad_nll * weight).to(grad.dtype)[:, None], None, None


def masked_ce(logits, gold, weight):
    if fce.fused_available(logits):
        return _MaskedFusedCE.apply(logits.contiguous(), gold, weight)
    nll = F.cross_entropy(logits.float(), gold, reduction="none")
    return (nll * weight).sum(), logits.argmax(-1)


def static_terms(model, t):
    """MirrorModel.forward's training terms (no host syncs, shapes from the bucket)."""
    cfg, B = model.cfg, t["c"].size(0)
    c_mem, c_vec = encode_padded(model.context_encoder, model.embed(t["c"]), t["c_len"])
    Tx, Ty = t["x"].size(1), t["y"].size(1)
    width = max(Tx, Ty)
    stacked = torch.cat([F.pad(t["x"], (0, width - Tx), value=cfg.pad_id),
                         F.pad(t["y"], (0, width - Ty), value=cfg.pad_id)])
    u_mem, u_vec = encode_padded(model.utterance_encoder, model.embed(stacked),
                                 torch.cat([t["x_len"], t["y_len"]]))
    vecs = {"c": c_vec, "x": u_vec[:B], "y": u_vec[B:]}
    memories = {"c": (c_mem, lengths_to_mask(t["c_len"], c_mem.size(1))),
                "x": (u_mem[:B, :Tx], lengths_to_mask(t["x_len"], Tx)),
                "y": (u_mem[B:, :Ty], lengths_to_mask(t["y_len"], Ty))}
    prior_in = torch.cat([vecs[k] for k in cfg.prior], -1)
    mu_p, logvar_p = model.prior_net(prior_in)
    mu_q, logvar_q = model.posterior_net(torch.cat([vecs[k] for k in "cxy"], -1))
    z = reparameterize(mu_q, logvar_q)
    kl_dims = gaussian_kl_dims(mu_q.float(), logvar_q.float(), mu_p.float(),
                               logvar_p.float())
    terms = {"kl": kl_dims.sum(), "kl_weight": model.kl_annealing()}
    if cfg.free_bits > 0:
        terms["kl_loss"] = free_bits_kl(kl_dims, cfg.free_bits, cfg.free_bits_mode)
    z_cond = torch.cat([z.to(prior_in.dtype), prior_in], -1)
    for side in model.bow_sides():
        terms["nll_bow_" + side] = getattr(model, "bow_" + side)(z_cond, t[side],
                                                                 cfg.pad_id)
    for name in cfg.decoders:
        side = model.DECODERS[name].target
        out, _ = model.run_decoder(name, model.word_dropout(t[side + "_in"]), z, vecs,
                                   memories)
        idx = t["idx_" + side]
        weight = (torch.arange(idx.numel(), device=idx.device)
                  < t["n"][0 if side == "x" else 1]).float()
        gold = t[side + "_gold"].reshape(-1).index_select(0, idx)
        hidden = out.reshape(-1, out.size(-1)).index_select(0, idx)
        terms["nll_" + name], argmax = masked_ce(model.readout(name)(hidden), gold, weight)
        if name == "y_cxz":
            terms["correct_y_cxz"] = (argmax.eq(gold).float() * weight).sum()
    return terms


AMP = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Step:
    """One training step of the padded batch: the graph system's body, replayed per
    bucket, or run as it is (CPU, the warm-up before a capture)."""

    def __init__(self, state, precision, gpu, max_grad_norm):
        self.model, self.loss_fn = state["model"], state["trainer"].train_loss
        self.precision, self.gpu, self.max_grad_norm = precision, gpu, max_grad_norm
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=1e-3, fused=gpu, capturable=gpu)
        self.scaler = torch.amp.GradScaler("cuda", enabled=gpu and precision == "fp16")

    def forward_loss(self, t):
        with torch.autocast("cuda", AMP[self.precision], enabled=self.gpu,
                            cache_enabled=False):
            terms = static_terms(self.model, t)
            loss = self.loss_fn.total(terms) / t["c"].size(0)  # -normalization sents
        return loss, terms

    def __call__(self, t):
        self.opt.zero_grad(set_to_none=False)
        loss, terms = self.forward_loss(t)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=self.gpu)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.model.kl_annealing.step += 1
        return torch.stack([loss.detach().float(), terms["nll_y_cxz"].detach(),
                            terms["kl"].detach(), terms["correct_y_cxz"]])


class GraphedSteps:
    """A CUDA graph of Step per bucket key, all in one memory pool, the gradients shared
    (zeroed inside each graph). Each call copies the batch's flat buffer into the key's
    static one, replays, and copies the step's statistics to pinned host memory."""

    def __init__(self, step):
        self.step, self.graphs, self.pool = step, {}, None
        self.stats_host = torch.zeros(4, pin_memory=True)
        self.capture_s = 0.0

    def capture(self, key, flat):
        t = time.perf_counter()
        static = flat.clone()
        inputs = unflatten(key, static)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.step(inputs)  # first run of these shapes outside capture (cuDNN, Triton)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            stats = self.step(inputs)
        self.pool = graph.pool()
        self.graphs[key] = (graph, static, stats)
        torch.cuda.synchronize()
        self.capture_s += time.perf_counter() - t

    def __call__(self, key, flat):
        graph, static, stats = self.graphs[key]
        static.copy_(flat)
        graph.replay()
        self.stats_host.copy_(stats, non_blocking=True)


# -- (e) ---------------------------------------------------------------------------------
def check_padding(state, gpu):
    """The padded-bucket terms against MirrorModel.forward + MirrorLoss on the first timed
    batch: fp32, dropout off, the same seed (so the same z sample), the KL counter
    restored in between. Raises when the loss differs by more than 1e-4 relative."""
    model, loss_fn, batch = state["model"], state["trainer"].train_loss, state["timed"][0]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    p = model.emb_dropout.p
    model.update_dropout(0.0, 0.0)
    model.train()
    counter = model.kl_annealing.step.clone()
    counter.fill_(500)  # a KL weight of 1/4, so the KL term counts too
    with torch.no_grad():
        model.kl_annealing.step.copy_(counter)
        torch.manual_seed(7)
        out, attns = model(batch["src"], batch["tgt"], batch["srclen"])
        eager, _ = loss_fn(batch, out, attns)
        model.kl_annealing.step.copy_(counter)
        key, flat = bucket_batch(batch, model.cfg, quantum=64)
        torch.manual_seed(7)
        terms = static_terms(model, unflatten(key, flat.to(batch["src"].device)))
        padded = loss_fn.total(terms)
        model.kl_annealing.step.copy_(counter)
    model.update_dropout(p, p)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    rel = abs(float(padded) - float(eager)) / abs(float(eager))
    row = {"key": key, "eager_loss": float(eager), "padded_loss": float(padded),
           "relative_difference": rel,
           "dec1_nll": [float(attns["mirror"]["nll_y_cxz"]), float(terms["nll_y_cxz"])]}
    print("(e) padded vs eager loss: %s" % json.dumps(row), flush=True)
    assert rel < 1e-4, "the padded-bucket step changes the loss: %r" % row
    return row


# -- (d) ---------------------------------------------------------------------------------
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
    """(d): forward+backward median ms (CUDA events), peak memory above the inputs, and
    relative errors of loss and gradients against fp32 arithmetic on the same fp16
    inputs."""
    H, V = bt.SIZES["hidden"], bt.SIZES["vocab"]
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
            print("(d) %s" % json.dumps(row), flush=True)
            rows.append(row)
    return rows


# -- (a), (b), (c) timing ---------------------------------------------------------------
def graph_window(st, gpu):
    bt.sync(gpu)
    t, cpu = time.perf_counter(), bt.host_cpu_seconds()
    for key, flat in st["prepared"]:
        st["run"](key, flat)
    bt.sync(gpu)
    st["elapsed"].append(time.perf_counter() - t)
    st["cpu"].append(bt.host_cpu_seconds() - cpu)


def bench_compile(args, ctx, peak, deadline, results):
    """(c), last in the run (an interrupted compile can leave a stream capturing): compile
    every bucket key of the first batch size within the limit, then time its windows
    alone (not in turns with (a) and (b), which ran before it in the same process)."""
    eager, full, prepared, keys, info = ctx
    limit = min(args.compile_limit, deadline - time.time() - 30)
    st = {"system": "mirror", "name": "compile fp16 (reduce-overhead)", "timed": full,
          "prepared": prepared, "elapsed": [], "cpu": [],
          "model": copy.deepcopy(eager["model"]), "trainer": eager["trainer"],
          "query_id": eager["query_id"]}
    step = Step(st, "fp16", True, max_grad_norm=2.0)
    step.opt = torch.optim.Adam(step.params, lr=1e-3, fused=True)
    flats = [next(f for k, f in prepared if k == key) for key in keys]
    t = time.perf_counter()
    try:
        if limit < 30:
            raise CompileTimeout({}, 0.0)
        st["run"], per_key = compiled_runner(step, keys, flats, limit)
        info["compile"] = {"seconds": time.perf_counter() - t, "per_key_s": per_key,
                           "all_keys": True}
    except CompileTimeout as e:
        per_key, spent = e.args if e.args else ({}, 0.0)
        info["compile"] = {"gave_up_after_s": spent, "limit_s": limit,
                           "keys_compiled": len(per_key), "keys": len(keys),
                           "per_key_s": per_key}
    except Exception as e:
        info["compile"] = {"error": "%s: %s" % (type(e).__name__, str(e)[:500])}
    print("(c) %s" % json.dumps(info["compile"]), flush=True)
    if "run" in st:
        for _ in range(args.rounds):
            graph_window(st, True)
        row = bt.row_of(st, info["batch"], "fp16", True)
        row.update(system=st["name"], mfu=row["achieved_tflops"] * 1e12 / peak)
        results["batches"][0]["rows"].append(row)
        print(json.dumps(row), flush=True)


class CompileTimeout(Exception):
    pass


def compiled_runner(step, keys, flats, limit):
    """(c): the forward and loss through torch.compile(mode="reduce-overhead") (its
    backward is compiled and graphed with it), clipping and Adam eager. Compiles every
    bucket key (one graph each: static shapes) within `limit` seconds, else raises
    CompileTimeout with what it got through."""
    torch._dynamo.config.cache_size_limit = max(64, len(keys) + 8)
    fwd = torch.compile(step.forward_loss, mode="reduce-overhead", dynamic=False)
    seconds = {}

    def run(key, flat):
        torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are done with
        step.opt.zero_grad(set_to_none=False)
        loss, _ = fwd(unflatten(key, flat))
        step.scaler.scale(loss).backward()
        step.scaler.unscale_(step.opt)
        torch.nn.utils.clip_grad_norm_(step.params, step.max_grad_norm, foreach=True)
        step.scaler.step(step.opt)
        step.scaler.update()
        step.model.kl_annealing.step += 1

    def alarm(*_):
        raise CompileTimeout()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(max(int(limit), 1))
    start = time.perf_counter()
    try:
        for key, flat in zip(keys, flats):
            t = time.perf_counter()
            for _ in range(3):  # reduce-overhead records its graph on a later call
                run(key, flat)
            torch.cuda.synchronize()
            seconds[str(key)] = time.perf_counter() - t
    except CompileTimeout:
        raise CompileTimeout(seconds, time.perf_counter() - start)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return run, seconds


def prepare(state, cfg, gpu, quantum):
    """The timed batches padded to their buckets, flat on the device (as (a)'s are)."""
    dev = "cuda" if gpu else "cpu"
    out = []
    for b in state["timed"]:
        key, flat = bucket_batch(b, cfg, quantum)
        out.append((key, flat.to(dev)))
    return out


def bench_batch(args, batch, gpu, peak, results, save, later):
    """(a) and (b) (fp16, bf16) at one batch size, timing windows in turns; what (c) needs
    of the first batch size goes into `later`."""
    systems = []
    eager = bt.setup("mirror", args.scratch, batch, "fp16", args.steps, args.warmup, gpu,
                     args.bucket_size)
    full = [b for b in eager["timed"] if len(b["tgt"]) == batch]
    dropped = len(eager["timed"]) - len(full)
    eager["timed"] = full  # the bucket keys hold B fixed; a short last batch is left out
    eager.update(name="eager (stock Trainer)", elapsed=[], cpu=[])
    systems.append(eager)
    cfg = eager["model"].cfg
    quantum = max(64, batch // 2)
    prepared = prepare(eager, cfg, gpu, quantum)
    keys = sorted({k for k, _ in prepared})
    print("batch %d: %d timed batches (%d short ones left out), %d bucket keys: %s" % (
        batch, len(full), dropped, len(keys), keys), flush=True)
    real = sum(int(f[-2:].sum()) for _, f in prepared)
    rows_cap = sum(k[4] + k[5] for k, _ in prepared)
    info = {"batch": batch, "keys": [list(k) for k in keys], "timed_batches": len(full),
            "output_rows_real": real, "output_rows_with_capacity": rows_cap}
    for precision in args.graph_precisions:
        st = {"system": "mirror", "name": "graph %s" % precision, "timed": full,
              "precision": precision,
              "prepared": prepared, "elapsed": [], "cpu": [],
              "model": copy.deepcopy(eager["model"]), "trainer": eager["trainer"],
              "query_id": eager["query_id"]}
        for m in st["model"].modules():
            if isinstance(m, torch.nn.LSTM):
                m.flatten_parameters()
                # the one-kernel cast makes fp16 weights; under bf16 autocast's own casts
                m.cast_flat = precision == "fp16"
        step = Step(st, precision, gpu, max_grad_norm=2.0)
        if gpu:
            runner = GraphedSteps(step)
            try:
                for key in keys:
                    runner.capture(key, next(f for k, f in prepared if k == key))
            except Exception as e:  # a step that cannot be captured is a result
                info["capture_error_" + precision] = "%s: %s" % (type(e).__name__,
                                                                 str(e)[:500])
                print("%s: capture failed: %s" % (st["name"], info["capture_error_"
                                                                  + precision]), flush=True)
                continue
            st["run"] = runner
            st["capture_s"] = runner.capture_s
            print("%s: captured %d graphs in %.1f s" % (st["name"], len(keys),
                                                        runner.capture_s), flush=True)
        else:
            st["run"] = lambda key, flat, step=step: step(unflatten(key, flat))
        st["step"] = step
        systems.append(st)
    if args.compile and batch == args.batches[0] and gpu:
        later["compile"] = (eager, full, prepared, keys, info)
    for r in range(args.rounds):
        for st in bt.in_turns(systems, r):
            if st is eager:
                bt.time_window(st, gpu)
            else:
                graph_window(st, gpu)
    rows = []
    for st in systems:
        row = bt.row_of(st, batch, st.get("precision", "fp16"), gpu)
        row["system"] = st["name"]
        row["mfu"] = row["achieved_tflops"] * 1e12 / peak
        row["capture_s"] = st.get("capture_s")
        if "step" in st and gpu:
            stats = st["run"].stats_host.tolist() if hasattr(st["run"], "stats_host") \
                else None
            row["last_step_loss_nll_kl_correct"] = stats
        rows.append(row)
        print(json.dumps(row), flush=True)
    results["batches"].append({"info": info, "rows": rows})
    save()
    del systems
    if gpu:
        torch.cuda.empty_cache()


def scratch_data(data, vocab):
    """bench_train.options reads DATA/vocab.txt and writes its yaml into DATA: a temporary
    folder of links, so the prepared data's folder and OUT stay as they are."""
    path = tempfile.mkdtemp(prefix="bench_step_data_")
    for name, src in (("train.src", os.path.join(data, "train.src")),
                      ("train.tgt", os.path.join(data, "train.tgt")), ("vocab.txt", vocab)):
        link = os.path.join(path, name)
        if not os.path.exists(link):
            os.symlink(os.path.abspath(src), link)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="prepared DailyDialog (train.src/.tgt)")
    p.add_argument("--vocab", required=True, help="onmt_build_vocab's counts (vocab.txt)")
    p.add_argument("--out", required=True)
    p.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    p.add_argument("--graph-precisions", nargs="+", default=["fp16", "bf16"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--bucket-size", type=int, default=32768)
    p.add_argument("--ce-tokens", type=int, nargs="*", default=[8192, 32768],
                   help="(d)'s token counts; none skips (d)")
    p.add_argument("--ce-repeat", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also time (c)")
    p.add_argument("--compile-limit", type=float, default=150.0,
                   help="seconds (c) may spend compiling before it is given up")
    p.add_argument("--budget", type=float, default=440.0,
                   help="seconds this run may take; (c) gets what is left of them")
    p.add_argument("--tiny", action="store_true",
                   help="small LSTMs (64) for a CPU check of the padding and the steps")
    args = p.parse_args()
    deadline = time.time() + args.budget
    if args.tiny:
        bt.SIZES.update(hidden=64, emb=32, z=16)
    os.makedirs(args.out, exist_ok=True)
    args.scratch = scratch_data(args.data, args.vocab)
    gpu = torch.cuda.is_available()
    results = {"device": torch.cuda.get_device_name(0) if gpu else "cpu",
               "torch": torch.__version__, "sizes": bt.SIZES, "argv": sys.argv[1:],
               "batches": []}
    path = os.path.join(args.out, "bench_step.json")

    def save():
        with open(path, "w") as f:
            json.dump(results, f, indent=1)

    peak = bt.matmul_peak() if gpu else float("nan")
    results["matmul_peak_tflops"] = peak / 1e12
    if gpu and args.ce_tokens:
        results["ce"] = bench_ce(args.ce_tokens, args.ce_repeat)
        save()
    check = bt.setup("mirror", args.scratch, args.batches[0], "fp16", 1, 0, gpu,
                     args.bucket_size)
    try:
        results["padding_check"] = check_padding(check, gpu)
    except AssertionError as e:  # recorded; the speed of the padded step still counts
        results["padding_check"] = {"failed": str(e)}
    del check
    save()
    later = {}
    for batch in args.batches:
        if time.time() > deadline - 120 and batch != args.batches[0]:
            print("batch %d skipped: the run's --budget is spent" % batch, flush=True)
            continue
        bench_batch(args, batch, gpu, peak, results, save, later)
    if "compile" in later:
        bench_compile(args, later.pop("compile"), peak, deadline, results)
        save()
    print("\ndevice: %s, fp16 matmul peak %.0f TFLOP/s" % (results["device"], peak / 1e12))
    print("| system | batch | examples/s best (median) | vs eager | MFU | host CPU ms/step |")
    print("|---|---|---|---|---|---|")
    for b in results["batches"]:
        base = b["rows"][0]["examples_per_s"]
        for r in b["rows"]:
            print("| %s | %d | %.0f (%.0f) | %.2f | %.1f%% | %.1f |" % (
                r["system"], r["batch"], r["examples_per_s"], r["median_examples_per_s"],
                r["examples_per_s"] / base, 100 * r["mfu"], r["host_cpu_ms_per_step"]))
    for r in results.get("ce", []):
        print("| CE %s | %d tokens | %s ms | peak +%s GiB | err loss %s dh %s dW %s |" % (
            r["method"], r["tokens"], "%.2f" % r["ms"] if "ms" in r else r.get("error"),
            "%.2f" % r["peak_extra_gib"] if "peak_extra_gib" in r else "-",
            *("%.1e" % r[k] if k in r else "-" for k in ("rel_err_loss", "rel_err_dh",
                                                          "rel_err_dW"))))


if __name__ == "__main__":
    main()
