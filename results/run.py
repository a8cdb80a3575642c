"""Train recipes side by side on one GPU, decode them fairly, pack the results.

    python results/run.py PLAN.yaml --work run/study --out OUT [--phase train|decode|all]
                          [--budget SECONDS] [--jobs a,b] [--data data/dailydialog]

A plan (results/latent.yaml, results/comparison.yaml) names jobs and how to decode them:

- jobs.<name>: `config` (a recipe; none for a job that only re-ranks another's output),
  `kind` (stock, latent or mirror: which decodings apply), `args` (extra onmt_train
  options), `gpu_memory_gb` (its training's GPU memory cap; default: the plan's),
  `decode: false` (a model only others use), `needs` (jobs whose decoding must finish
  first) and `steps` (shell commands run after its decodings, with {data} {work} {dir}
  {model} {dir:JOB} {model:JOB}).
- decodings.<name>: onmt_translate options on top of `decode_args`, for the `kinds` given,
  into WORK/<job>/<name>.txt (`src` names a file of --data or of WORK/data).
- search: one decoding search space for every system, tuned on `src` (a validation
  subset) by `objective` (bleu1..4): each setting is decoded, the best by the objective is
  decoded on the test windows into test.tuned.txt, and search.json reports every setting.
  A setting with `rerank: true` writes K x n-best candidates and their scores
  (-mirror_rerank_scores); its lambda and gamma are tuned on the subset first.
- subsets.<name>: {split, lines}: the first lines of data/<split>.{src,tgt} as
  WORK/data/<name>.{src,tgt}.

Phases. train: the jobs on the one GPU, as many at once as its memory holds: each training
is capped at `gpu_memory_gb` (the job's, else the plan's; -mirror_gpu_memory_gb) and starts
while the running ones' caps, with a GB each for the CUDA context, fit the card
(--gpu-memory-gb, default the first GPU's from nvidia-smi); the others start as running
ones end. Each logs to WORK/<job>/; a job ends at its -train_steps or
after --budget seconds (the plugin's atomic saves leave only complete checkpoints); the
first failure stops the others and prints the failing job's log. A job that has
checkpoints but is not done resumes with -train_from (exact resume): a lent machine keeps
nothing between commands, so a plan trains to a step count in one command or chains
commands while the machine is warm. decode: each job's pipeline (decodings, search, steps)
on its best checkpoint (the lowest validation perplexity in its log: for Mirror-type models
-mirror_select says which), up to --parallel pipelines at a time; a finished pipeline is
not run again. OUT gets one tarball of every log, prediction and JSON (a lent machine
returns at most 8 files).
"""
import argparse
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import threading
import time

import yaml

VALID_PPL = re.compile(r"Validation perplexity: ([0-9.e+-]+)")
STEP = re.compile(r"Step\s+(\d+)/")
SAVED = re.compile(r"Saving checkpoint \S+_step_(\d+)\.pt")
BEST = re.compile(r"Best validation perplexity so far \(([0-9.e+-]+),.*\): (\S+)")
KINDS = ("stock", "latent", "mirror")


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class RunError(Exception):
    pass


def read_plan(path):
    with open(path, encoding="utf-8") as f:
        plan = yaml.safe_load(f)
    if not isinstance(plan, dict) or not isinstance(plan.get("jobs"), dict):
        raise RunError("%s: needs a 'jobs' mapping" % path)
    for name, job in plan["jobs"].items():
        if job.get("kind", "stock") not in KINDS:
            raise RunError("%s: job %s: kind must be one of %s" % (path, name, KINDS))
        for other in job.get("needs", []):
            if other not in plan["jobs"]:
                raise RunError("%s: job %s needs an unknown job %s" % (path, name, other))
    return plan


def tail(path, lines=30):
    if not os.path.exists(path):
        return "(no log)"
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def status_of(folder):
    path = os.path.join(folder, "status.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path, data):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)


def write_status(folder, **fields):
    write_json(os.path.join(folder, "status.json"), dict(status_of(folder), **fields))


def checkpoints(folder):
    """Regular checkpoints by step (the best-checkpoint copies are not among them)."""
    found = [(int(p.rsplit("_", 1)[1][:-3]), p)
             for p in glob.glob(os.path.join(folder, "model_step_*.pt"))]
    return [p for _, p in sorted(found)]


# -- training --------------------------------------------------------------------------
def train_command(plan, name, folder):
    job = plan["jobs"][name]
    cmd = ["onmt_train", "-config", job["config"], "-save_model",
           os.path.join(folder, "model"), "-log_file", os.path.join(folder, "train.log")]
    cmd += [str(a) for a in plan.get("train_args", []) + job.get("args", [])]
    done = checkpoints(folder)
    return cmd + (["-train_from", done[-1]] if done else [])


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait()


CONTEXT_GB = 1.0  # a training's GPU memory beyond its allocator's cap (CUDA context, cuDNN)


def card_memory_gb():
    """The first GPU's memory in GB, from nvidia-smi (the runner itself stays off the GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, check=True).stdout
        return int(out.split()[0]) / 1024
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        raise RunError("cannot read the GPU's memory with nvidia-smi: give --gpu-memory-gb")


def job_memory_gb(plan, name):
    """The GPU memory a job's training may use (-mirror_gpu_memory_gb): its own
    gpu_memory_gb, else the plan's."""
    gb = plan["jobs"][name].get("gpu_memory_gb", plan.get("gpu_memory_gb"))
    if not isinstance(gb, (int, float)) or gb <= 0:
        raise RunError("job %s: no gpu_memory_gb (a positive number) in the job or the plan"
                       % name)
    return gb


def startable(plan, waiting, running, card_gb):
    """The waiting jobs to start now, in plan order: each while the running ones' caps, its
    own and a context each stay within the card's memory."""
    used = sum(job_memory_gb(plan, n) + CONTEXT_GB for n in running)
    start = []
    for name in waiting:
        need = job_memory_gb(plan, name) + CONTEXT_GB
        if need > card_gb:
            raise RunError("job %s needs %g GB of GPU memory, the card has %.1f"
                           % (name, need, card_gb))
        if used + need > card_gb:
            break
        start.append(name)
        used += need
    return start


def train(plan, work, names, budget, card_gb):
    """Every job's training, as many at once as the card's memory holds (each capped at
    its gpu_memory_gb); the others start as running ones end."""
    waiting = []
    for name in names:
        folder = os.path.join(work, name)
        os.makedirs(folder, exist_ok=True)
        if plan["jobs"][name].get("config") and not status_of(folder).get("trained"):
            waiting.append(name)
    procs = {}
    while waiting or procs:
        for name in startable(plan, waiting, procs, card_gb):
            waiting.remove(name)
            folder = os.path.join(work, name)
            cmd = train_command(plan, name, folder) + [
                "-mirror_gpu_memory_gb", str(job_memory_gb(plan, name))]
            log("%s: %s" % (name, " ".join(cmd)))
            out = open(os.path.join(folder, "stdout.log"), "a", encoding="utf-8")
            procs[name] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True), time.time(), out)
        time.sleep(2)
        for name, (proc, start, out) in list(procs.items()):
            folder = os.path.join(work, name)
            code = proc.poll()
            over = budget and time.time() - start > budget
            if code is None and not over:
                continue
            stop(proc)
            out.close()
            del procs[name]
            if code not in (None, 0):
                for p, _, o in procs.values():
                    stop(p)
                    o.close()
                raise RunError("%s failed (exit %d); the end of its log:\n%s" % (
                    name, code, tail(os.path.join(folder, "stdout.log"))))
            steps = [int(s) for s in STEP.findall(tail(os.path.join(folder, "train.log"),
                                                       400))]
            last = max(steps, default=0)
            write_status(folder, trained=code == 0, last_step=last,
                         seconds=round(time.time() - start) + status_of(folder).get(
                             "seconds", 0))
            log("%s: %s at step %d" % (name, "done" if code == 0 else "stopped (budget)",
                                       last))


# -- decoding --------------------------------------------------------------------------
def best_checkpoint(folder):
    """(path, validation perplexity): Mirror's best-checkpoint copy with the lowest logged
    perplexity; else the regular checkpoint saved right after the validation with the
    lowest perplexity (the trainer validates, then saves, at the same step); else the
    last checkpoint (perplexity None)."""
    text = tail(os.path.join(folder, "train.log"), 10 ** 7)
    best = [(float(p), path) for p, path in BEST.findall(text) if os.path.exists(path)]
    if best:
        ppl, path = min(best)
        return path, ppl
    by_step, last = {}, None
    for line in text.splitlines():
        m = VALID_PPL.search(line)
        if m:
            last = float(m.group(1))
        m = SAVED.search(line)
        if m and last is not None:
            by_step[int(m.group(1))], last = last, None
    saved = {int(p.rsplit("_", 1)[1][:-3]): p for p in checkpoints(folder)}
    scored = [(by_step[s], p) for s, p in saved.items() if s in by_step]
    if scored:
        ppl, path = min(scored)
        return path, ppl
    if saved:
        return saved[max(saved)], None
    raise RunError("%s: no checkpoint to decode" % folder)


class Pipeline:
    """One job's decodings, search and steps, run one after the other (a thread)."""

    def __init__(self, plan, name, work, data, models):
        self.plan, self.name, self.work, self.data = plan, name, work, data
        self.models = models  # job -> its best checkpoint, found once for all pipelines
        self.job = plan["jobs"][name]
        self.kind = self.job.get("kind", "stock")
        self.dir = os.path.join(work, name)
        self.log_path = os.path.join(self.dir, "pipeline.log")
        self.error = None

    def model(self, name=None):
        name = name or self.name
        if not self.models.get(name):
            raise RunError("%s: no checkpoint of %s to decode" % (self.name, name))
        return self.models[name]

    def expand(self, text):
        def sub(m):
            key, _, job = m.group(1).partition(":")
            if key == "model":
                return self.model(job or None)
            if key == "dir":
                return os.path.join(self.work, job) if job else self.dir
            return {"data": self.data, "work": self.work}[key]
        return re.sub(r"\{(model(?::\w+)?|dir(?::\w+)?|data|work)\}", sub, str(text))

    def src(self, name):
        subset = os.path.join(self.work, "data", name)
        return subset if os.path.exists(subset) else os.path.join(self.data, name)

    def sh(self, cmd):
        with open(self.log_path, "a", encoding="utf-8") as out:
            out.write("$ %s\n" % cmd)
            out.flush()
            code = subprocess.call(["bash", "-c", cmd], stdout=out, stderr=subprocess.STDOUT)
        if code:
            raise RunError("%s: `%s` failed (exit %d); the end of its log:\n%s"
                           % (self.name, cmd, code, tail(self.log_path)))

    def translate(self, src, output, args):
        args = [self.expand(a) for a in self.plan.get("decode_args", []) + list(args)]
        self.sh(" ".join(shlex.quote(a) for a in [
            "onmt_translate", "-model", self.model(), "-src", self.src(src),
            "-output", output] + args))

    def applies(self, spec):
        return self.kind in spec.get("kinds", KINDS)

    def run(self):
        try:
            if self.job.get("config") and self.job.get("decode", True):
                for run, spec in self.plan.get("decodings", {}).items():
                    output = os.path.join(self.dir, run + ".txt")
                    if self.applies(spec) and not os.path.exists(output):
                        log("%s: decode %s" % (self.name, run))
                        self.translate(spec.get("src", "test.src"), output,
                                       spec.get("args", []))
                if self.plan.get("search"):
                    self.search(self.plan["search"])
            for step in self.job.get("steps", []):
                log("%s: %s" % (self.name, step[:70]))
                self.sh(self.expand(step))
            open(os.path.join(self.dir, "pipeline.done"), "w").close()
        except RunError as e:
            self.error = e
        except Exception as e:  # a bug in this thread must still stop the run
            self.error = RunError("%s: %s: %s" % (self.name, type(e).__name__, e))

    def search(self, space):
        """Decode every setting on the subset, keep the best by the objective."""
        from onmt_mirror.evaluate.metrics import bleu, tokenize

        objective = space.get("objective", "bleu2")
        ref_path = self.src(space["ref"])
        with open(ref_path, encoding="utf-8") as f:
            refs = [tokenize(line) for line in f]
        folder = os.path.join(self.dir, "search")
        os.makedirs(folder, exist_ok=True)
        results = {}
        for setting, spec in space["settings"].items():
            if not self.applies(spec):
                continue
            out = os.path.join(folder, setting + ".txt")
            args = list(spec.get("args", []))
            if spec.get("rerank"):
                scores = os.path.join(folder, setting + ".tsv")
                tuned = os.path.join(folder, setting + ".json")
                if not os.path.exists(tuned):
                    self.translate(space["src"], out, args + ["-mirror_rerank_scores",
                                                              scores])
                    self.sh("python -m onmt_mirror.rerank tune --scores %s --ref %s "
                            "--objective %s --lambdas %s --gammas=%s --output %s"
                            % (scores, ref_path, objective, spec.get("lambdas", "0:1:0.25"),
                               spec.get("gammas", "-1:1:0.5"), tuned))
                with open(tuned, encoding="utf-8") as f:
                    params = json.load(f)
                results[setting] = {"value": params["value"], "lambda": params["lambda"],
                                    "gamma": params["gamma"], "args": args}
                continue
            if not os.path.exists(out):
                self.translate(space["src"], out, args)
            with open(out, encoding="utf-8") as f:
                hyps = [tokenize(line) for line in f]
            results[setting] = {"value": bleu(refs, hyps)[objective], "args": args}
        if not results:  # no setting of the search space applies to this kind
            return
        chosen = max(results, key=lambda s: results[s]["value"])
        write_json(os.path.join(self.dir, "search.json"),
                   {"objective": objective, "subset": space["src"], "chosen": chosen,
                    "settings": results})
        log("%s: decoding setting %s (%s %.4f on %s)" % (
            self.name, chosen, objective, results[chosen]["value"], space["src"]))
        output = os.path.join(self.dir, "test.tuned.txt")
        spec = results[chosen]
        if "lambda" not in spec:
            self.translate("test.src", output, spec["args"])
            return
        scores = os.path.join(self.dir, "test.tuned.tsv")
        self.translate("test.src", os.path.join(self.dir, "test.candidates.txt"),
                       spec["args"] + ["-mirror_rerank_scores", scores])
        self.sh("python -m onmt_mirror.rerank apply --scores %s --params %s --output %s"
                % (scores, os.path.join(folder, chosen + ".json"), output))


def make_subsets(plan, work, data):
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    for name, spec in plan.get("subsets", {}).items():
        for ext in ("src", "tgt"):
            with open(os.path.join(data, "%s.%s" % (spec["split"], ext)),
                      encoding="utf-8") as f:
                lines = [line for _, line in zip(range(spec["lines"]), f)]
            with open(os.path.join(work, "data", "%s.%s" % (name, ext)), "w",
                      encoding="utf-8") as f:
                f.writelines(lines)


def best_checkpoints(plan, work):
    """{job: its best checkpoint} of every trained job (training is over when decoding
    starts), each recorded in the job's status.json."""
    models = {}
    for name, job in plan["jobs"].items():
        folder = os.path.join(work, name)
        if not job.get("config") or not os.path.isdir(folder):
            continue
        try:
            path, ppl = best_checkpoint(folder)
        except RunError:  # not trained (yet): an error only for the pipeline needing it
            continue
        write_status(folder, decoded_from=os.path.basename(path), best_valid_ppl=ppl)
        models[name] = path
    return models


def decode(plan, work, names, data, parallel):
    make_subsets(plan, work, data)
    models = best_checkpoints(plan, work)
    pending = [n for n in names
               if not os.path.exists(os.path.join(work, n, "pipeline.done"))]
    finished = set(names) - set(pending)
    running = {}
    while pending or running:
        for name in list(pending):
            needs = set(plan["jobs"][name].get("needs", [])) & set(names)
            if len(running) < parallel and needs <= finished:
                pipe = Pipeline(plan, name, work, data, models)
                os.makedirs(pipe.dir, exist_ok=True)
                thread = threading.Thread(target=pipe.run)
                thread.start()
                running[name] = (pipe, thread)
                pending.remove(name)
        time.sleep(1)
        for name, (pipe, thread) in list(running.items()):
            if thread.is_alive():
                continue
            del running[name]
            if pipe.error:
                for p, t in running.values():
                    t.join()
                raise pipe.error
            finished.add(name)
            log("%s: decoded" % name)


def pack(work, out, names):
    os.makedirs(out, exist_ok=True)
    target = os.path.join(out, "results.tar.gz")
    with tarfile.open(target, "w:gz") as tar:
        for name in names:
            for path in sorted(glob.glob(os.path.join(work, name, "*")) +
                               glob.glob(os.path.join(work, name, "search", "*"))):
                if path.endswith((".txt", ".log", ".json")):
                    tar.add(path, arcname=os.path.relpath(path, work))
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
    parser.add_argument("--gpu-memory-gb", type=float, default=0,
                        help="the card's memory that trainings share (default: the first "
                        "GPU's, from nvidia-smi)")
    args = parser.parse_args(argv)
    names = []

    def stopped(signum, frame):  # a device command's time limit: still pack what exists
        raise RunError("stopped by signal %d" % signum)

    signal.signal(signal.SIGTERM, stopped)
    try:
        plan = read_plan(args.plan)
        names = args.jobs.split(",") if args.jobs else list(plan["jobs"])
        unknown = [n for n in names if n not in plan["jobs"]]
        if unknown:
            raise RunError("%s: no job(s) %s" % (args.plan, ", ".join(unknown)))
        if args.phase in ("train", "all"):
            train(plan, args.work, names, args.budget,
                  args.gpu_memory_gb or card_memory_gb())
        if args.phase in ("decode", "all"):
            decode(plan, args.work, names, args.data, args.parallel)
    except RunError as e:
        log("error: %s" % e)
        return 1
    finally:
        if args.out:
            pack(args.work, args.out, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
