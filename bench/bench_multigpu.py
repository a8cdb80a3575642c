"""Data-parallel scaling of Mirror through OpenNMT-py's own -world_size / -gpu_ranks.

Runs the stock `onmt_train` (the plugin loads in every spawned rank through its .pth hook)
three times on one host, same recipe, same seed:

    1 GPU,  batch B            the per-GPU work of the multi-GPU run
    G GPUs, batch B on each    global batch G*B
    1 GPU,  batch G*B          the same global batch on one card: the loss reference

and prints one table: examples/s between the report at --from-step and the last one (from
the log lines' timestamps and their `sents` counts, summed over ranks by OpenNMT-py), the
weak-scaling efficiency (G GPUs against G times one GPU at the same per-GPU batch), the
strong-scaling ratio (against one GPU at the same global batch), and Dec1's perplexity at
each report.

    python bench/bench_multigpu.py --config examples/dailydialog/mirror.yaml \
        --vocab data/dailydialog/vocab.txt --out OUT [--gpus 2 --batch 512 --steps 300]

Everything onmt_train logs stays in OUT/<run>.log. Keep NVLink multicast off
(NCCL_NVLS_ENABLE=0) as the lent machines require; this script sets it for its children.
"""
import argparse
import datetime
import json
import os
import re
import subprocess

STEP = re.compile(r"^\[(\S+ \S+) INFO\] Step (\d+)/ *\d+; .*?ppl: *([\d.]+);.*?sents: *(\d+);")


def run(name, gpus, batch, args):
    log = os.path.join(args.out, name + ".log")
    cmd = ["onmt_train", "-config", args.config, "-src_vocab", args.vocab,
           "-train_steps", str(args.steps), "-report_every", str(args.report_every),
           "-valid_steps", "1000000", "-save_checkpoint_steps", "1000000",
           "-save_model", os.path.join(args.scratch, name), "-batch_size", str(batch),
           "-world_size", str(gpus), "-gpu_ranks", *map(str, range(gpus)),
           "-log_file", log, "-seed", "1"]
    env = dict(os.environ, NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1",
               NVSHMEM_DISABLE_NVLS="1")
    with open(log + ".stdout", "w") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    with open(log + ".stdout") as f:
        steps = [m.groups() for m in map(STEP.match, f) if m]
    if rc or not steps:
        raise SystemExit("%s: onmt_train exited with %d; see %s.stdout" % (name, rc, log))
    when = {int(s): datetime.datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f")
            for t, s, _, _ in steps}
    window = [(int(s), int(n)) for _, s, _, n in steps if int(s) > args.from_step]
    seconds = (when[window[-1][0]] - when[args.from_step]).total_seconds()
    return {"run": name, "gpus": gpus, "batch_per_gpu": batch, "global_batch": gpus * batch,
            "examples_per_s": sum(n for _, n in window) / seconds,
            "steps_timed": "%d-%d" % (args.from_step, window[-1][0]),
            "ppl": {int(s): float(p) for _, s, p, _ in steps}}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scratch", default="/tmp/bench_multigpu",
                   help="where the final checkpoints go (not kept)")
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--batch", type=int, default=512, help="per-GPU batch (sentences)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--report-every", type=int, default=25)
    p.add_argument("--from-step", type=int, default=100,
                   help="time from this report on (start-up and warm-up excluded)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    G, B = args.gpus, args.batch
    one = run("1gpu_b%d" % B, 1, B, args)
    many = run("%dgpu_b%d" % (G, B), G, B, args)
    ref = run("1gpu_b%d" % (G * B), 1, G * B, args)
    result = {"runs": [one, many, ref],
              "weak_scaling_efficiency": many["examples_per_s"] / (G * one["examples_per_s"]),
              "strong_scaling_ratio": many["examples_per_s"] / ref["examples_per_s"]}
    with open(os.path.join(args.out, "bench_multigpu.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("| run | GPUs | batch per GPU | global batch | examples/s | steps timed |")
    print("|---|---|---|---|---|---|")
    for r in result["runs"]:
        print("| %s | %d | %d | %d | %.0f | %s |" % (
            r["run"], r["gpus"], r["batch_per_gpu"], r["global_batch"],
            r["examples_per_s"], r["steps_timed"]))
    print("\nweak scaling: %.1f%% (%d GPUs vs %d x 1 GPU at batch %d per GPU); strong: %.2fx "
          "(vs 1 GPU at global batch %d)" % (
              100 * result["weak_scaling_efficiency"], G, G, B,
              result["strong_scaling_ratio"], G * B))
    print("\nDec1 perplexity (z from the posterior) per report:")
    print("| step | " + " | ".join(r["run"] for r in result["runs"]) + " |")
    print("|---|" + "---|" * len(result["runs"]))
    for step in sorted(ref["ppl"]):
        print("| %d | %s |" % (step, " | ".join(
            "%.1f" % r["ppl"][step] if step in r["ppl"] else "" for r in result["runs"])))


if __name__ == "__main__":
    main()
