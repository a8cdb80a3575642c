"""Train recipes side by side on one GPU, decode their best checkpoints, pack the results.

    python results/run.py PLAN.yaml --work run/study --out OUT [--phase train|decode|all]
                          [--budget SECONDS] [--jobs a,b]

PLAN (results/latent.yaml is one) names the jobs (a recipe and extra onmt_train options
each) and the decodings (onmt_translate options, run on each job's best checkpoint).

- train: every job runs at once on the one GPU (batch 128 is host-bound: four trainings
  kept an H200 96-97% busy), each with its own log under WORK/<job>/. A job ends at its
  -train_steps or after --budget seconds (then it is stopped; the plugin's atomic saves
  leave only complete checkpoints). The first job to fail stops the others, and its log's
  tail is printed. A job that has checkpoints but is not done resumes with -train_from
  (exact resume, docs/reliability.md): a lent machine keeps nothing between commands, so
  a plan either trains to a step count in one command or chains commands while it is warm.
- decode: each decoding of each job on its best checkpoint (the lowest validation
  perplexity the log reports, by -mirror_select for Mirror-type models), up to --parallel
  decodings at a time, into WORK/<job>/<decoding>.txt.
- OUT gets one tarball with every log, prediction and status.json (a lent machine returns
  at most 8 files).
"""
import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time

import yaml

VALID_PPL = re.compile(r"Validation perplexity: ([0-9.e+-]+)")
STEP = re.compile(r"Step\s+(\d+)/")
BEST = re.compile(r"Best validation perplexity so far \(([0-9.e+-]+),.*\): (\S+)")


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class RunError(Exception):
    pass


def read_plan(path):
    with open(path, encoding="utf-8") as f:
        plan = yaml.safe_load(f)
    for key in ("jobs", "decodings"):
        if not isinstance(plan.get(key), dict) or not plan[key]:
            raise RunError("%s: needs a non-empty '%s' mapping" % (path, key))
    return plan


def job_dir(work, name):
    path = os.path.join(work, name)
    os.makedirs(path, exist_ok=True)
    return path


def checkpoints(folder):
    """Regular checkpoints, by step (the best-checkpoint copies excluded)."""
    found = []
    for path in glob.glob(os.path.join(folder, "model_step_*.pt")):
        found.append((int(path.rsplit("_", 1)[1][:-3]), path))
    return [p for _, p in sorted(found)]


def status_of(folder):
    path = os.path.join(folder, "status.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_status(folder, **fields):
    status = dict(status_of(folder), **fields)
    with open(os.path.join(folder, "status.json.tmp"), "w", encoding="utf-8") as f:
        json.dump(status, f, indent=1)
    os.replace(os.path.join(folder, "status.json.tmp"),
               os.path.join(folder, "status.json"))


def train_command(plan, name, folder):
    job = plan["jobs"][name]
    cmd = ["onmt_train", "-config", job["config"], "-save_model",
           os.path.join(folder, "model"), "-log_file", os.path.join(folder, "train.log")]
    cmd += [str(a) for a in plan.get("train_args", []) + job.get("args", [])]
    done = checkpoints(folder)
    if done:
        cmd += ["-train_from", done[-1]]
    return cmd


def tail(path, lines=30):
    if not os.path.exists(path):
        return "(no log)"
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def train(plan, work, names, budget):
    procs = {}
    for name in names:
        folder = job_dir(work, name)
        if status_of(folder).get("trained"):
            log("%s: trained already" % name)
            continue
        cmd = train_command(plan, name, folder)
        log("%s: %s" % (name, " ".join(cmd)))
        out = open(os.path.join(folder, "stdout.log"), "a", encoding="utf-8")
        procs[name] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True), time.time(), out)
    while procs:
        time.sleep(2)
        for name, (proc, start, out) in list(procs.items()):
            folder = os.path.join(work, name)
            code = proc.poll()
            over = budget and time.time() - start > budget
            if code is None and not over:
                continue
            if code is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
            out.close()
            del procs[name]
            steps = [int(s) for s in STEP.findall(tail(os.path.join(folder, "train.log"),
                                                       400))]
            if code not in (None, 0):
                for other, (p, _, o) in procs.items():
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait()
                    o.close()
                raise RunError("%s failed (exit %d); the end of its log:\n%s" % (
                    name, code, tail(os.path.join(folder, "stdout.log"))))
            write_status(folder, trained=code == 0, last_step=max(steps, default=0),
                         seconds=round(time.time() - start))
            log("%s: %s at step %d" % (name, "done" if code == 0 else "stopped (budget)",
                                       max(steps, default=0)))


def best_checkpoint(folder):
    """The Mirror best-checkpoint copy with the lowest logged perplexity; else the regular
    checkpoint at the step with the lowest logged validation perplexity; else the last."""
    text = tail(os.path.join(folder, "train.log"), 100000)
    best = [(float(p), path) for p, path in BEST.findall(text) if os.path.exists(path)]
    if best:
        return min(best)[1], min(best)[0]
    by_step, step = {}, 0
    for line in text.splitlines():
        m = STEP.search(line)
        step = int(m.group(1)) if m else step
        m = VALID_PPL.search(line)
        if m:
            by_step[step] = float(m.group(1))
    saved = {int(p.rsplit("_", 1)[1][:-3]): p for p in checkpoints(folder)}
    scored = [(by_step[s], p) for s, p in saved.items() if s in by_step]
    if scored:
        return min(scored)[1], min(scored)[0]
    if saved:
        return saved[max(saved)], None
    raise RunError("%s: no checkpoint to decode" % folder)


def decode(plan, work, names, data, parallel):
    queue = []
    for name in names:
        folder = job_dir(work, name)
        model, ppl = best_checkpoint(folder)
        write_status(folder, decoded_from=os.path.basename(model), best_valid_ppl=ppl)
        kind = plan["jobs"][name].get("kind", "stock")
        for run, spec in plan["decodings"].items():
            if kind not in spec.get("kinds", ["stock", "latent"]):
                continue
            output = os.path.join(folder, run + ".txt")
            if os.path.exists(output):
                continue
            src = os.path.join(data, spec.get("src", "test.src"))
            cmd = ["onmt_translate", "-model", model, "-src", src, "-output", output]
            cmd += [str(a) for a in plan.get("decode_args", []) + spec.get("args", [])]
            queue.append((name, run, cmd, os.path.join(folder, run + ".log")))
    running = []
    while queue or running:
        while queue and len(running) < parallel:
            name, run, cmd, log_path = queue.pop(0)
            log("decode %s/%s" % (name, run))
            out = open(log_path, "w", encoding="utf-8")
            running.append((name, run, subprocess.Popen(cmd, stdout=out,
                                                        stderr=subprocess.STDOUT), out,
                            log_path))
        time.sleep(1)
        for item in list(running):
            name, run, proc, out, log_path = item
            if proc.poll() is None:
                continue
            out.close()
            running.remove(item)
            if proc.returncode:
                for *_, p, o, _ in running:
                    p.kill()
                raise RunError("decoding %s/%s failed; the end of its log:\n%s"
                               % (name, run, tail(log_path)))


def pack(work, out, names):
    os.makedirs(out, exist_ok=True)
    target = os.path.join(out, "results.tar.gz")
    with tarfile.open(target, "w:gz") as tar:
        for name in names:
            for path in sorted(glob.glob(os.path.join(work, name, "*"))):
                if path.endswith((".txt", ".log", ".json")):
                    tar.add(path, arcname=os.path.join(name, os.path.basename(path)))
    log("packed %s" % target)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("plan")
    parser.add_argument("--work", default="run/study")
    parser.add_argument("--out", default=None, help="folder for the tarball")
    parser.add_argument("--data", default="data/dailydialog")
    parser.add_argument("--phase", choices=["train", "decode", "all"], default="all")
    parser.add_argument("--budget", type=float, default=0,
                        help="seconds of training per job in this command (0: no limit)")
    parser.add_argument("--jobs", default=None, help="comma-separated subset of jobs")
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        plan = read_plan(args.plan)
        names = args.jobs.split(",") if args.jobs else list(plan["jobs"])
        unknown = [n for n in names if n not in plan["jobs"]]
        if unknown:
            raise RunError("%s: no job(s) %s" % (args.plan, ", ".join(unknown)))
        if args.phase in ("train", "all"):
            train(plan, args.work, names, args.budget)
        if args.phase in ("decode", "all"):
            decode(plan, args.work, names, args.data, args.parallel)
    except RunError as e:
        log("error: %s" % e)
        return 1
    finally:
        if args.out:
            pack(args.work, args.out, names if "names" in locals() else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
