"""GPU speed of Mirror against the stock OpenNMT-py seq2seq of the same size, one run.

For each system the model, optimizer, loss and Trainer are built by OpenNMT-py's own code
(onmt.train_single's steps, the plugin loaded by its .pth hook) from the same options as
`onmt_train`; real DailyDialog batches come from OpenNMT-py's iterator, are moved to the
GPU once, and the timed loop calls the stock Trainer's _gradient_accumulation (forward,
loss, backward, optimizer step, statistics) on them. So the numbers are the model's and
the trainer's, not the data pipeline's (OpenNMT-py's pipeline is measured separately by
onmt_train itself; see docs/performance.md).

Systems: seq2seq_inputfeed (stock default), seq2seq_cudnn (-input_feed 0), mirror
(-input_feed 0, the plugin's default for GPUs, its step replayed from CUDA graphs:
-mirror_captured_step on), mirror_eager (the same with the stock eager step);
mirror_stock_ce, mirror_autocast_weights, mirror_one_stream and mirror_coarse_buckets are
Mirror without one speed-up each, for A/B runs. The captured step's first batch of each
length bucket is captured inside the timed windows; later windows replay (the best window
is reported), and after timing the graphs are replayed alone for their GPU time. MFU =
analytic model FLOPs on real (non-pad) tokens / time / the card's dense fp16/bf16 peak
(measured here with a large matmul). The systems take turns over --rounds timing
windows, in forward then reverse order, and the best and the median window are reported:
a busy host, which launches every kernel, can slow single windows by up to 40% (seen).
Peak memory is per system (its weights, gradients and Adam state plus its step's peak; a
captured step's graphs allocate their pool before, so it reads low), host CPU the
process's CPU time per step.

    python bench/bench_train.py --data data/dailydialog --out OUTDIR [--batches 128 512]

DATA holds the prepared windows (`python -m onmt_mirror.prepare dailydialog`) and vocab.txt,
the shared vocabulary counts of `onmt_build_vocab -config examples/dailydialog/mirror.yaml
-n_sample -1` (run/dailydialog/vocab.txt, copied there); the 20k cut happens at load.
"""
import argparse
import json
import os
import resource
import statistics
import time

import torch

import onmt  # noqa: F401  (loads the plugin through the .pth hook)
from onmt.constants import CorpusTask
from onmt.inference_engine import InferenceEnginePY
from onmt.models import build_model_saver
from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter
from onmt.model_builder import build_model
from onmt.opts import train_opts, translate_opts
from onmt.train_single import _init_train
from onmt.trainer import build_trainer
from onmt.utils.optimizers import Optimizer
from onmt.utils.parse import ArgumentParser

from onmt_mirror.modules.lstm import LSTM
from onmt_mirror.modules.streams import in_parallel
from onmt_mirror.training.buckets import bucket_batch

SIZES = dict(hidden=1000, emb=200, layers=2, vocab=20000, z=160)
SYSTEMS = {
    "seq2seq_inputfeed": ["-input_feed", "1"],
    "seq2seq_cudnn": ["-input_feed", "0"],
    "mirror": ["-encoder_type", "mirror", "-input_feed", "0",
               "-mirror_z_size", str(SIZES["z"]), "-mirror_captured_step", "on"],
}
# Mirror with the stock eager training step (-mirror_captured_step off)
SYSTEMS["mirror_eager"] = SYSTEMS["mirror"][:-1] + ["off"]
# Mirror's captured step with its encoders and decoders one after another on one stream
# (modules/streams.py off), to measure what the side streams buy; not in the default table.
SYSTEMS["mirror_one_stream"] = SYSTEMS["mirror"]
# Mirror's captured step with the coarser bucket ladder it had first: more padding, about
# half the graphs; not in the default table.
SYSTEMS["mirror_coarse_buckets"] = SYSTEMS["mirror"]
COARSE_WIDTHS = (8, 16, 24, 32, 48, 64, 100, 128)
# Mirror with autocast's own per-weight casts for cuDNN (modules/lstm.py:LSTM off), to
# measure what casting the flat weight buffer once buys; not in the default table.
SYSTEMS["mirror_autocast_weights"] = SYSTEMS["mirror"]
# Mirror with F.cross_entropy on fp32 logits instead of the fused kernel
# (losses/fused_cross_entropy.py), likewise
SYSTEMS["mirror_stock_ce"] = SYSTEMS["mirror"]
RATIO_TO = ("seq2seq_cudnn", "mirror_eager")  # the table's ratio columns (docs/performance.md's targets)
DEFAULT_SYSTEMS = ["seq2seq_inputfeed", "seq2seq_cudnn", "mirror_eager", "mirror"]


def options(system, data, batch, precision, gpu, bucket_size=32768):
    yaml_path = os.path.join(data, "bench_%s.yaml" % system)
    with open(yaml_path, "w") as f:
        f.write("data:\n  train:\n    path_src: %s/train.src\n    path_tgt: %s/train.tgt\n"
                "    transforms: [mirror_triple]\n" % (data, data))
    args = ["-config", yaml_path, "-src_vocab", os.path.join(data, "vocab.txt"),
            "-share_vocab", "-src_vocab_size", str(SIZES["vocab"]),
            "-tgt_vocab_size", str(SIZES["vocab"]),
            "-save_data", "/tmp/bench", "-hidden_size", str(SIZES["hidden"]),
            "-word_vec_size", str(SIZES["emb"]), "-layers", str(SIZES["layers"]),
            "-batch_type", "sents", "-batch_size", str(batch), "-optim", "adam",
            "-learning_rate", "0.001", "-max_grad_norm", "2", "-dropout", "0.3",
            "-param_init", "0.08", "-normalization", "sents", "-num_workers", "0",
            "-bucket_size", str(bucket_size), "-seed", "1", "-report_every", "100000",
            "-model_dtype", precision, "-world_size", "1"] + SYSTEMS[system]
    if gpu:
        args += ["-gpu_ranks", "0"]
    parser = ArgumentParser()
    train_opts(parser)
    opt = parser.parse_args(args)
    ArgumentParser.validate_train_opts(opt)
    ArgumentParser.update_model_opts(opt)
    ArgumentParser.validate_model_opts(opt)
    return opt


def lstm_flops(tokens, layers, in_size, hidden):
    """Forward FLOPs of a stacked LSTM over `tokens` steps (first layer reads in_size)."""
    first = 2 * 4 * hidden * (in_size + hidden)
    rest = 2 * 4 * hidden * (2 * hidden)
    return tokens * (first + (layers - 1) * rest)


def attn_out_flops(steps, memory_pairs, hidden, vocab):
    """Luong 'general' attention (+ output layer) forward FLOPs; memory_pairs = sum T*S."""
    return (steps * (2 * hidden * hidden + 2 * 2 * hidden * hidden + 2 * hidden * vocab)
            + memory_pairs * 4 * hidden)


def batch_flops(system, batch, query_id):
    """Training FLOPs (3x forward) of one batch counting real tokens only."""
    H, E, L, V, Z = (SIZES[k] for k in ("hidden", "emb", "layers", "vocab", "z"))
    src = batch["src"][:, :, 0]
    src_len = batch["srclen"].double()
    y_steps = (batch["tgtlen"] - 1).double()  # decoder steps: <s> y (predicting y </s>)
    if system.startswith("seq2seq"):
        feed = H if system == "seq2seq_inputfeed" else 0
        fwd = (lstm_flops(src_len.sum(), L, E, H) + lstm_flops(y_steps.sum(), L, E + feed, H)
               + attn_out_flops(y_steps.sum(), (y_steps * src_len).sum(), H, V))
        return 3 * float(fwd)
    q_pos = (src == query_id).int().argmax(1).double()
    c_len, x_len = q_pos, src_len - q_pos - 1
    y_len = y_steps - 1
    x_steps = x_len + 1
    fwd = (lstm_flops(c_len.sum(), L, E, H) + lstm_flops((x_len + y_len).sum(), L, E, H)
           + lstm_flops(2 * y_steps.sum() + 2 * x_steps.sum(), L, E + Z, H)
           + attn_out_flops(y_steps.sum(), (y_steps * x_len).sum(), H, V)   # Dec1 over x
           + attn_out_flops(x_steps.sum(), (x_steps * c_len).sum(), H, V)   # Dec2 over c
           + attn_out_flops(x_steps.sum(), (x_steps * y_len).sum(), H, V)   # Dec3 over y
           + attn_out_flops(y_steps.sum(), (y_steps * c_len).sum(), H, V))  # Dec4 over c
    return 3 * float(fwd)


def matmul_peak(dtype=torch.float16):
    a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    b = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * 8192 ** 3 / (time.perf_counter() - t)


def sync(gpu):
    if gpu:
        torch.cuda.synchronize()


# beam-10 decodings: reply lengths, extra onmt_translate options, the systems (None: all)
DECODINGS = {
    "decode": (3, 40, [], None),
    "decode_fixed": (20, 20, [], None),
    "decode_fixed_fp16": (20, 20, ["-precision", "fp16"], None),
    "decode_fixed_stock_step": (20, 20, ["-mirror_captured_beam", "off"], ("mirror",)),
}


def decode_engines(state, data, train_steps, out, gpu):
    """Train `train_steps` more batches (so replies have realistic lengths), save, and load
    the checkpoint into the stock inference engine once per DECODINGS setting: beam 10
    with the usual limits (3 to 40 tokens), where a model that rambles does more steps,
    and with every reply exactly 20 tokens, the same work for both models (also in fp16,
    and for Mirror with the stock beam step)."""
    system, opt, optim = state["system"], state["opt"], state["optim"]
    for _, (b, _) in zip(range(train_steps), state["it"]):
        train_step(state, b)
    opt.save_model = os.path.join(out, "ckpt_" + system)
    build_model_saver(opt, opt, state["model"], state["vocabs"], optim,
                      0 if gpu else -1).save(optim.training_step)
    ckpt = "%s_step_%d.pt" % (opt.save_model, optim.training_step)
    engines = {}
    for key, (low, high, extra, systems) in DECODINGS.items():
        if systems is not None and system not in systems:
            continue
        pred = os.path.join(out, "pred_%s_%s.txt" % (system, key))
        parser = ArgumentParser()
        translate_opts(parser)
        topt = parser.parse_args(
            ["-model", ckpt, "-src", os.path.join(data, "test.src"), "-output", pred,
             "-beam_size", "10", "-max_length", str(high), "-min_length", str(low),
             "-batch_size", "64", "-transforms", "mirror_triple"] + extra
            + (["-gpu", "0"] if gpu else []))
        ArgumentParser.validate_translate_opts(topt)
        ArgumentParser._get_all_transform_translate(topt)
        ArgumentParser._validate_transforms_opts(topt)
        ArgumentParser.validate_translate_opts_dynamic(topt)
        engines[key] = (InferenceEnginePY(topt), pred)
    os.remove(ckpt)
    state["decode"] = {"engines": engines, "after_steps": optim.training_step,
                       "seconds": {key: [] for key in engines}}


def decode_window(state, gpu):
    """Decode the test windows once per length setting; the seconds join state["decode"]."""
    for key, (engine, pred) in state["decode"]["engines"].items():
        sync(gpu)
        t = time.perf_counter()
        engine.infer_file()
        sync(gpu)
        state["decode"]["seconds"][key].append(time.perf_counter() - t)


def decode_row(state):
    """Responses/s of the fastest decoding of each setting (all are in *_s), its replies'
    average length; the engines are released."""
    row = {"decode_after_steps": state["decode"]["after_steps"]}
    for key, (engine, pred) in state["decode"]["engines"].items():
        engine.terminate()
        with open(pred) as f:
            lines = f.read().splitlines()
        seconds = state["decode"]["seconds"][key]
        row.update({key + "_responses_per_s": len(lines) / min(seconds),
                    key + "_median_responses_per_s": len(lines) / statistics.median(seconds),
                    key + "_s": seconds,
                    key + "_avg_len": sum(len(x.split()) for x in lines) / max(len(lines), 1)})
    del state["decode"]
    return row


def profile(state, batches, out, name):
    """Where a training step's time goes: the profiler's table of GPU kernels and CPU
    ops over `batches`, and how busy the GPU was (kernel time / wall time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for b in batches:
            train_step(state, b)
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    events = prof.key_averages()
    kernels = sum(e.time_range.elapsed_us() for e in prof.events()
                  if e.device_type == torch.autograd.DeviceType.CUDA) / 1e6
    table = "\n".join(events.table(sort_by=key, row_limit=30, max_name_column_width=70)
                      for key in ("self_device_time_total", "count",
                                  "self_cpu_time_total"))
    text = "%s: %d steps, wall %.3f s (with the profiler on), GPU busy %.3f s (%.0f%%)\n%s" % (
        name, len(batches), wall, kernels, 100 * kernels / wall, table)
    with open(os.path.join(out, "profile_%s.txt" % name), "w") as f:
        f.write(text)
    print(text[:6000], flush=True)


def setup(system, data, batch_size, precision, steps, warmup, gpu, bucket_size):
    """Model, optimizer and Trainer built as onmt_train builds them, the batches on the
    device, and `warmup` steps already run."""
    opt = options(system, data, batch_size, precision, gpu, bucket_size)
    device_id = 0 if gpu else -1
    torch.manual_seed(1)
    checkpoint, vocabs, transforms_cls = _init_train(opt)
    model = build_model(opt, opt, vocabs, checkpoint, device_id)
    if system == "mirror_autocast_weights":
        for module in model.modules():
            if isinstance(module, LSTM):
                module.cast_flat = False
    if system == "mirror_stock_ce":
        model.fused_ce = False
    optim = Optimizer.from_opt(model, opt, checkpoint=None)
    trainer = build_trainer(opt, device_id, model, vocabs, optim)
    if system == "mirror_coarse_buckets" and getattr(trainer, "mirror_step", None):
        trainer.mirror_step.widths = COARSE_WIDTHS
    it = build_dynamic_dataset_iter(opt, transforms_cls, vocabs, task=CorpusTask.TRAIN,
                                    device_id=device_id)
    batches = []
    for batch, _ in it:
        batches.append(batch)
        if len(batches) == steps + warmup:
            break
    state = dict(system=system, opt=opt, vocabs=vocabs, model=model, optim=optim,
                 trainer=trainer, it=it, timed=batches[warmup:], elapsed=[], cpu=[],
                 query_id=vocabs["src"]["｟mirror_query｠"])
    for b in batches[:warmup]:
        train_step(state, b)
    return state


def train_step(state, batch):
    in_parallel.enabled = state["system"] != "mirror_one_stream"  # systems take turns
    state["trainer"]._gradient_accumulation([batch], len(batch["tgt"]),
                                            onmt.utils.Statistics(), onmt.utils.Statistics())


def host_cpu_seconds():
    """CPU time of every thread of this process (autograd's backward thread included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_window(state, gpu):
    """One pass over the timed batches; its wall time joins state["elapsed"] and the
    host CPU time it took state["cpu"] (busy host time, less sensitive than the wall
    clock to what else the lent host runs)."""
    sync(gpu)
    t, cpu = time.perf_counter(), host_cpu_seconds()
    for b in state["timed"]:
        train_step(state, b)
    sync(gpu)
    state["elapsed"].append(time.perf_counter() - t)
    state["cpu"].append(host_cpu_seconds() - cpu)


def graph_gpu_ms(state):
    """The captured step's GPU time alone: each timed batch's forward/backward graph and
    the update graph replayed back to back with no host work between, i.e. the step's
    time if the host always kept ahead. (Run after timing: it moves the weights.)"""
    step = state["trainer"].mirror_step
    cfg = state["model"].cfg
    keys = [bucket_batch(b, cfg, step.widths)[0] for b in state["timed"]]
    keys = [k for k in keys if k in step.forward_graphs]
    torch.cuda.synchronize()
    t = time.perf_counter()
    for key in keys:
        step.forward_graphs[key][0].replay()
        step.update_graph.replay()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / len(keys)


def step_peak_gib(state):
    """GPU memory one system needs: its weights, gradients and Adam state, plus the peak its
    training step adds. (max_memory_allocated alone would count the other systems' models;
    the gradients of the last step live until the next one starts.)"""
    params = list(state["model"].parameters())
    own = params + [p.grad for p in params if p.grad is not None] + [
        t for per_param in state["optim"]._optimizer.state.values()
        for t in per_param.values() if torch.is_tensor(t)]
    resident = sum(t.numel() * t.element_size() for t in own if t.is_cuda)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    train_step(state, state["timed"][0])
    torch.cuda.synchronize()
    return (resident + torch.cuda.max_memory_allocated() - base) / 2 ** 30


def row_of(state, batch_size, precision, gpu):
    """The best of the timed windows (the host's other load only ever slows a window)."""
    timed, elapsed = state["timed"], min(state["elapsed"])
    n_ex = sum(len(b["tgt"]) for b in timed)
    n_tgt = sum(int((b["tgtlen"] - 1).sum()) for b in timed)
    flops = sum(batch_flops(state["system"], b, state["query_id"]) for b in timed)
    return {"system": state["system"], "batch": batch_size, "precision": precision,
            "examples_per_s": n_ex / elapsed, "tgt_tokens_per_s": n_tgt / elapsed,
            "flops_per_example": flops / n_ex, "achieved_tflops": flops / elapsed / 1e12,
            "host_cpu_ms_per_step": 1000 * min(state["cpu"]) / len(timed),
            "steps": len(timed), "window_examples_per_s": [n_ex / e for e in state["elapsed"]],
            "median_examples_per_s": n_ex / statistics.median(state["elapsed"])}


def in_turns(items, round_no):
    """Round r's order: forward, then reverse (a window's place in the turn biased an A/B
    by up to 13%)."""
    return items if round_no % 2 == 0 else items[::-1]


def bench_batch(args, batch, precision, gpu, peak):
    """Every system at one batch size, their timing windows taking turns."""
    states = [setup(system, args.data, batch, precision, args.steps, args.warmup, gpu,
                    args.bucket_size) for system in args.systems]
    for r in range(args.rounds):
        for state in in_turns(states, r):
            time_window(state, gpu)
    rows = []
    for state in states:
        row = row_of(state, batch, precision, gpu)
        row["peak_mem_gib"] = step_peak_gib(state) if gpu else 0.0
        row["mfu"] = row["achieved_tflops"] * 1e12 / peak
        if gpu and getattr(state["trainer"], "mirror_step", None) is not None:
            row["graph_gpu_ms_per_step"] = graph_gpu_ms(state)
        if args.profile_steps and gpu:
            profile(state, state["timed"][:args.profile_steps], args.out,
                    "%s_%d" % (state["system"], batch))
        rows.append(row)
    decoders = [(state, row) for state, row in zip(states, rows)
                if state["system"] in ("seq2seq_inputfeed", "mirror")]
    if batch == args.batches[0] and args.decode_steps and decoders:
        for state, _ in decoders:
            decode_engines(state, args.data, args.decode_steps, args.out, gpu)
        for r in range(args.decode_rounds):
            for state, _ in in_turns(decoders, r):
                decode_window(state, gpu)
        for state, row in decoders:
            row.update(decode_row(state))
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="prepared DailyDialog + vocab.txt")
    p.add_argument("--out", required=True)
    p.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    p.add_argument("--precisions", nargs="+", default=["fp16"])
    p.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS,
                   choices=list(SYSTEMS))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--decode-steps", type=int, default=0,
                   help="at the first batch size, train seq2seq_inputfeed and mirror this "
                   "many more batches, then time beam-10 decoding of test.src")
    p.add_argument("--decode-rounds", type=int, default=3,
                   help="decodings of the test windows per system and length setting, the "
                   "systems taking turns; the fastest is reported (all are in the json)")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="after timing, profile this many steps of each system (GPU only; "
                   "tables in OUT/profile_SYSTEM_BATCH.txt)")
    p.add_argument("--rounds", type=int, default=3,
                   help="timing windows per system, the systems taking turns; the best "
                   "window is reported (all are in the json)")
    p.add_argument("--bucket-size", type=int, default=32768,
                   help="examples sorted together before batching (the recipes' value)")
    p.add_argument("--stock-sort", action="store_true",
                   help="batch with OpenNMT-py's own (src, tgt) length sort instead of the "
                   "plugin's triple sort (registration/data.py), to see what that buys")
    args = p.parse_args()
    if args.stock_sort:
        import onmt.inputters.dynamic_iterator as dyn

        dyn.text_sort_key = dyn.text_sort_key.keywords["stock_key"]
    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if gpu else "cpu"
    peak = matmul_peak() if gpu else float("nan")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for batch in args.batches:
        for precision in args.precisions:
            rows += bench_batch(args, batch, precision, gpu, peak)
            if gpu:
                torch.cuda.empty_cache()
    with open(os.path.join(args.out, "bench_train.json"), "w") as f:
        json.dump({"device": device, "matmul_peak_tflops": peak / 1e12,
                   "torch": torch.__version__, "rows": rows}, f, indent=1)
    print("\ndevice: %s, fp16 matmul peak %.0f TFLOP/s" % (device, peak / 1e12))
    print("| system | batch | precision | examples/s (best) | median | tgt tokens/s | "
          "vs %s | vs %s | MFU | host CPU ms/step | graphs' GPU ms/step | peak GiB |"
          % RATIO_TO)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def ratio(r, system):
        base = [b for b in rows if b["system"] == system and b["batch"] == r["batch"]
                and b["precision"] == r["precision"]]
        return "%.2f" % (r["examples_per_s"] / base[0]["examples_per_s"]) if base else "-"

    for r in rows:
        print("| %s | %d | %s | %.0f | %.0f | %.0f | %s | %s | %.1f%% | %.1f | %s | %.1f |"
              % (r["system"], r["batch"], r["precision"], r["examples_per_s"],
                 r["median_examples_per_s"], r["tgt_tokens_per_s"],
                 *(ratio(r, system) for system in RATIO_TO), 100 * r["mfu"],
                 r["host_cpu_ms_per_step"], "%.1f" % r["graph_gpu_ms_per_step"]
                 if "graph_gpu_ms_per_step" in r else "", r["peak_mem_gib"]))
    decoded = [r for r in rows if "decode_after_steps" in r]
    if decoded:
        print("\n| system | beam-10 decoding | responses/s (best) | median | avg tokens | "
              "vs seq2seq_inputfeed (best) |\n|---|---|---|---|---|---|")
        base = {k: v for r in decoded if r["system"] == "seq2seq_inputfeed"
                for k, v in r.items()}
        for r in decoded:
            for key in DECODINGS:
                if key + "_responses_per_s" in r:
                    best = r[key + "_responses_per_s"]
                    print("| %s | %s | %.0f | %.0f | %.1f | %s |" % (
                        r["system"], key, best, r[key + "_median_responses_per_s"],
                        r[key + "_avg_len"], "%.2f" % (best / base[key + "_responses_per_s"])
                        if key + "_responses_per_s" in base else "-"))

if __name__ == "__main__":
    main()
