"""Data-parallel scaling of Mirror through OpenNMT-py's own -world_size / -gpu_ranks.

Runs the stock `onmt_train` (the plugin loads in every spawned rank through its .pth hook)
on one host, same recipe, same seed:

    1 GPU,  batch B            the per-GPU work of the multi-GPU runs
    G GPUs, batch B on each    global batch G*B, gradients all-reduced during the backward
                               (-mirror_overlap_allreduce on, the default)
    G GPUs, batch B on each    the same with OpenNMT-py's own all-reduce after the backward
                               (-mirror_overlap_allreduce off)
    1 GPU,  batch G*B          the same global batch on one card: the loss reference

(with --gpus 1 only the first), and prints one table: examples/s between the report at
--from-step and the last one (from the log lines' timestamps and their `sents` counts,
summed over ranks by OpenNMT-py), the weak-scaling efficiency of each G-GPU run (against
G times one GPU at the same per-GPU batch), the strong-scaling ratio (against one GPU at
the same global batch), and Dec1's perplexity at each report. One command per GPU count:

    python bench/bench_multigpu.py --config examples/dailydialog/mirror.yaml \
        --vocab data/dailydialog/vocab.txt --out OUT [--gpus 2 --batch 512 --steps 300]

Everything onmt_train logs stays in OUT/<run>.log. Keep NVLink multicast off
(NCCL_NVLS_ENABLE=0) as the lent machines require; this script sets it for its children.
"""
import argparse
import datetime
import json
import math
import os
import re
import subprocess

STEP = re.compile(r"^\[(\S+ \S+) INFO\] Step (\d+)/ *\d+; .*?ppl: *([\d.]+);.*?sents: *(\d+);")


def run(name, gpus, batch, args, extra=()):
    log = os.path.join(args.out, name + ".log")
    cmd = ["onmt_train", "-config", args.config, "-src_vocab", args.vocab,
           "-train_steps", str(args.steps), "-report_every", str(args.report_every),
           "-valid_steps", "1000000", "-save_checkpoint_steps", "1000000",
           "-save_model", os.path.join(args.scratch, name), "-batch_size", str(batch),
           "-world_size", str(gpus), "-gpu_ranks", *map(str, range(gpus)),
           "-log_file", log, "-seed", "1", *extra]
    env = dict(os.environ, NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1",
               NVSHMEM_DISABLE_NVLS="1")
    with open(log + ".stdout", "w") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    with open(log + ".stdout") as f:
        steps = [m.groups() for m in map(STEP.match, f) if m]
    if rc or not steps:
        raise SystemExit("%s: onmt_train exited with %d; see %s.stdout" % (name, rc, log))
    return dict(run=name, gpus=gpus, batch_per_gpu=batch, global_batch=gpus * batch,
                **timings(steps, args))


def timings(steps, args):
    """Step lines (time, step, ppl, sents) -> examples/s from --from-step on, the time per
    step between reports, and the perplexity at each report."""
    when = {int(s): datetime.datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f")
            for t, s, _, _ in steps}
    window = [(int(s), int(n)) for _, s, _, n in steps if int(s) > args.from_step]
    seconds = (when[window[-1][0]] - when[args.from_step]).total_seconds()
    gaps = sorted((when[s] - when[s - args.report_every]).total_seconds() * 1000
                  / args.report_every for s, _ in window if s - args.report_every in when)
    return {"step_ms": {"mean": sum(gaps) / len(gaps), "median": gaps[len(gaps) // 2],
                        "p90": gaps[int(0.9 * (len(gaps) - 1))], "max": gaps[-1]},
            "examples_per_s": sum(n for _, n in window) / seconds,
            "steps_timed": "%d-%d" % (args.from_step, window[-1][0]),
            "ppl": {int(s): float(p) for _, s, p, _ in steps}}


def _allreduce_worker(rank, gpus, shapes, bucket_mb, port, result):
    import time

    import torch
    import torch.distributed as dist

    import onmt.utils.distributed
    from onmt_mirror.distributed import OverlappedAllReduce

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method="tcp://127.0.0.1:%d" % port, rank=rank,
                            world_size=gpus)
    params = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    grads = [p.grad for p in params]
    flat = torch.randn(sum(g.numel() for g in grads), device="cuda")
    buckets = OverlappedAllReduce(params, bucket_mb)

    def buckets_after_backward():  # no backward to hide behind: its whole cost
        with buckets.step(0):
            buckets.finish(float(gpus))

    times = {}
    for name, fn in (("onmt_chunked", lambda: onmt.utils.distributed.
                      all_reduce_and_rescale_tensors(grads, float(gpus))),
                     ("mirror_buckets", buckets_after_backward),
                     ("one_flat_buffer", lambda: dist.all_reduce(flat))):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        times[name] = (time.perf_counter() - t) * 100  # ms per call
    if rank == 0:
        result.put(times)
    dist.destroy_process_group()


def allreduce_probe(args):
    """Time OpenNMT-py's gradient all-reduce (after backward, not overlapped with it) on
    tensors of Mirror's parameter shapes at the recipe's sizes, the plugin's buckets
    launched and waited for at once (their cost when nothing overlaps them), and one
    flat all-reduce of the same bytes: what data parallelism adds to every step."""
    import sys

    import torch.multiprocessing as mp

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_train
    from onmt.model_builder import build_model
    from onmt.train_single import _init_train

    opt = bench_train.options("mirror", os.path.dirname(args.vocab), 512, "fp16", False)
    _, vocabs, _ = _init_train(opt)
    model = build_model(opt, opt, vocabs, None, -1)
    shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    mp.start_processes(_allreduce_worker,
                       args=(args.gpus, shapes, args.bucket_mb, 29555, result),
                       nprocs=args.gpus, start_method="spawn")
    times = result.get()
    times["megabytes_fp32"] = sum(math.prod(s) for s in shapes) * 4 / 2 ** 20
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scratch", default="/tmp/bench_multigpu",
                   help="where the final checkpoints go (not kept)")
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--bucket-mb", type=float, default=25.0,
                   help="-mirror_allreduce_bucket_mb of the overlapped run and the probe")
    p.add_argument("--batch", type=int, default=512, help="per-GPU batch (sentences)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--report-every", type=int, default=25)
    p.add_argument("--from-step", type=int, default=100,
                   help="time from this report on (start-up and warm-up excluded)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    G, B = args.gpus, args.batch
    runs = [run("1gpu_b%d" % B, 1, B, args)]
    allreduce = None
    if G > 1:
        try:
            allreduce = allreduce_probe(args)
        except Exception as e:  # the scaling runs below still say what they say
            allreduce = {"error": repr(e)}
        runs += [run("%dgpu_b%d" % (G, B), G, B, args,
                     ["-mirror_allreduce_bucket_mb", str(args.bucket_mb)]),
                 run("%dgpu_b%d_stock_allreduce" % (G, B), G, B, args,
                     ["-mirror_overlap_allreduce", "off"]),
                 run("1gpu_b%d" % (G * B), 1, G * B, args)]
    one, ref = runs[0], runs[-1]
    scaling = {r["run"]: {"weak": r["examples_per_s"] / (G * one["examples_per_s"]),
                          "strong": r["examples_per_s"] / ref["examples_per_s"]}
               for r in runs if r["gpus"] > 1}
    result = {"runs": runs, "allreduce_ms": allreduce, "scaling": scaling}
    with open(os.path.join(args.out, "bench_multigpu.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("| run | GPUs | batch per GPU | global batch | examples/s | steps timed | "
          "ms per step (mean / median / p90 / max over reports) |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print("| %s | %d | %d | %d | %.0f | %s | %.0f / %.0f / %.0f / %.0f |" % (
            r["run"], r["gpus"], r["batch_per_gpu"], r["global_batch"],
            r["examples_per_s"], r["steps_timed"], *(r["step_ms"][k] for k in (
                "mean", "median", "p90", "max"))))
    for name, s in scaling.items():
        print("\n%s: weak scaling %.1f%% (vs %d x 1 GPU at batch %d per GPU); strong "
              "%.2fx (vs 1 GPU at global batch %d)" % (name, 100 * s["weak"], G, B,
                                                       s["strong"], G * B))
    if allreduce and "error" in allreduce:
        print("all-reduce probe failed: %s" % allreduce["error"])
    elif allreduce:
        print("gradient all-reduce per step (%d GPUs, %.0f MB fp32), nothing overlapped: "
              "OpenNMT-py's chunked copy-reduce-copy %.1f ms; the plugin's %g MB buckets "
              "%.1f ms; one flat NCCL all-reduce of the same bytes %.1f ms"
              % (G, allreduce["megabytes_fp32"], allreduce["onmt_chunked"], args.bucket_mb,
                 allreduce["mirror_buckets"], allreduce["one_flat_buffer"]))
    print("\nDec1 perplexity (z from the posterior) per report:")
    print("| step | " + " | ".join(r["run"] for r in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for step in sorted(ref["ppl"]):
        print("| %d | %s |" % (step, " | ".join(
            "%.1f" % r["ppl"][step] if step in r["ppl"] else "" for r in runs)))


if __name__ == "__main__":
    main()
