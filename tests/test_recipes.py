"""The paper recipes (examples/<corpus>/mirror.yaml) and their READMEs.

- The recipes hold the paper's values, and the step counts follow from the corpus sizes.
- Every key is an option the stock `onmt_train -h` lists: onmt_train ignores unknown keys
  silently, so a misspelt key would otherwise fall back to a default unnoticed.
- The README's Mirror commands run as written, in order, through the stock CLIs on CPU
  at tiny sizes on the bundled demo slice (the only edits: the substitutions in `TINY_RUN`,
  and a test split cut to 5 lines after step 1), and the checkpoint keeps every recipe
  value except the overridden ones.
"""
import functools
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]

BIN = os.path.dirname(sys.executable)
EXAMPLES = REPO / "examples"
DEMO = EXAMPLES / "demo" / "data"

# corpus -> (z size, training windows: measured in docs/data.md / documented)
RECIPES = {"dailydialog": (160, 64935), "movietriples": (100, 196308)}
PAPER = {  # the paper's settings, shared by both corpora
    "encoder_type": "mirror", "rnn_type": "LSTM", "layers": 2, "hidden_size": 1000,
    "word_vec_size": 200, "share_vocab": True, "src_vocab_size": 20000,
    "tgt_vocab_size": 20000, "optim": "adam", "learning_rate": 0.001,
    "learning_rate_decay": 0.98, "batch_type": "sents", "batch_size": 128,
    "dropout": 0.3, "max_grad_norm": 2, "param_init": 0.08, "global_attention": "general",
    "normalization": "sents", "mirror_context_turns": 1, "mirror_kl_weight": 1.0,
    "gpu_ranks": [0], "world_size": 1, "model_dtype": "fp16", "early_stopping": 2,
}
# onmt_train options the tiny CPU run overrides; every other recipe key must reach the
# checkpoint unchanged.
TINY_TRAIN = {"hidden_size": 16, "word_vec_size": 8, "mirror_z_size": 4, "train_steps": 3,
              "batch_size": 8, "valid_steps": 3, "save_checkpoint_steps": 3,
              "report_every": 1, "bucket_size": 512, "gpu_ranks": [],
              "world_size": 1, "model_dtype": "fp32",
              "num_workers": 0}  # no data workers to start at the run and its validation
TINY_FLAGS = " ".join("-%s %s" % (k, " ".join(map(str, v)) if isinstance(v, list) else v)
                      for k, v in TINY_TRAIN.items())


def recipe(corpus, name="mirror.yaml"):
    return yaml.safe_load((EXAMPLES / corpus / name).read_text())


# the paper's exact setting; DailyDialog's mirror.yaml adds the latent remedy (docs/latent.md)
PAPER_RECIPE = {"dailydialog": "mirror_paper.yaml", "movietriples": "mirror.yaml"}
LATENT_DEFAULT = {"mirror_bow_weight": 1.0, "mirror_kl_anneal_steps": 2000,
                  "mirror_select": "prior", "mirror_keep_best": True,
                  "mirror_iw_samples": 10, "keep_checkpoint": 1}


def mirror_commands(corpus):
    """The shell lines of the README's '## Mirror' code block."""
    text = (EXAMPLES / corpus / "README.md").read_text()
    section = text.split("\n## Mirror\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


@functools.lru_cache(maxsize=None)
def cli_options(*cmd):
    out = subprocess.run([os.path.join(BIN, cmd[0])] + list(cmd[1:]), capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(re.findall(r"(?<![\w-])--?([A-Za-z]\w*)", out.stdout))


@pytest.fixture(scope="module")
def train_options():
    return cli_options("onmt_train", "-h")


def steps_per_epoch(corpus):
    return round(RECIPES[corpus][1] / PAPER["batch_size"])


@pytest.mark.parametrize("corpus", RECIPES)
def test_recipe_has_the_papers_values(corpus):
    cfg = recipe(corpus)
    assert {k: cfg.get(k) for k in PAPER} == PAPER
    assert cfg["mirror_z_size"] == RECIPES[corpus][0]
    assert cfg["input_feed"] == 0  # the cuDNN decoder; the YAML says 1 is the reference
    assert cfg["data"]["train"]["transforms"] == ["mirror_triple"]
    assert "n_sample" not in cfg  # would turn onmt_train into a sample dump


@pytest.mark.parametrize("corpus", RECIPES)
def test_schedule_is_the_references_65_epochs(corpus):
    cfg, epoch = recipe(corpus), steps_per_epoch(corpus)
    assert epoch == {"dailydialog": 507, "movietriples": 1534}[corpus]
    assert cfg["train_steps"] == 65 * epoch
    assert cfg["valid_steps"] == cfg["save_checkpoint_steps"] == epoch
    paper = recipe(corpus, PAPER_RECIPE[corpus])
    assert paper["mirror_kl_anneal_steps"] == round(0.2 * epoch)  # 0.2 of the first epoch
    # the best survives an early stop: kept apart, or among the last checkpoints
    assert cfg.get("mirror_keep_best") or cfg["keep_checkpoint"] > cfg["early_stopping"]
    assert cfg["bucket_size"] < 262144  # the default loops the corpus several times per bucket


def test_dailydialog_default_is_the_paper_setting_plus_the_latent_remedy():
    default, paper = recipe("dailydialog"), recipe("dailydialog", "mirror_paper.yaml")
    changed = {k: default.get(k) for k in set(default) | set(paper)
               if default.get(k) != paper.get(k)}
    paths = {"save_model": "run/dailydialog/mirror", "log_file": "run/dailydialog/train.log",
             "tensorboard_log_dir": "run/dailydialog/tensorboard"}
    assert changed == dict(LATENT_DEFAULT, **paths)


@pytest.mark.parametrize("corpus", RECIPES)
def test_learning_rate_decays_by_098_per_epoch_from_epoch_4(corpus):
    """OpenNMT-py's own schedule function, fed the recipe: epochs 1-3 at 1e-3, then x0.98."""
    from argparse import Namespace

    from onmt.utils.optimizers import make_learning_rate_decay_fn

    cfg, epoch = recipe(corpus), steps_per_epoch(corpus)
    keys = ("decay_method", "learning_rate_decay", "start_decay_steps", "decay_steps",
            "warmup_steps", "hidden_size")
    decay = make_learning_rate_decay_fn(Namespace(**{k: cfg.get(k) for k in keys}))
    for ep in (1, 2, 3, 4, 5, 65):
        first, last = (ep - 1) * epoch + 1, ep * epoch  # optimizer steps count from 1
        want = 0.98 ** max(ep - 3, 0)
        assert math.isclose(decay(first), want) and math.isclose(decay(last), want), ep


@pytest.mark.parametrize("corpus", RECIPES)
def test_every_recipe_key_is_an_onmt_train_option(corpus, train_options):
    cfg = recipe(corpus)
    unknown = sorted(set(cfg) - train_options)
    assert not unknown, "onmt_train would silently ignore %s" % unknown
    for split in cfg["data"].values():
        assert set(split) <= {"path_src", "path_tgt", "transforms", "weight"}


@pytest.mark.parametrize("corpus", RECIPES)
def test_readme_commands_use_known_options_and_existing_files(corpus, train_options):
    known = {"onmt_build_vocab": cli_options("onmt_build_vocab", "-h"),
             "onmt_train": train_options,
             "onmt_translate": cli_options("onmt_translate", "-h"),
             "onmt_mirror.prepare": cli_options("python", "-m", "onmt_mirror.prepare",
                                                corpus, "-h"),
             "onmt_mirror.evaluate": cli_options("python", "-m", "onmt_mirror.evaluate",
                                                 "-h")}
    seen = set()
    for line in mirror_commands(corpus):
        prog = next((p for p in known if re.match(r"(python -m )?%s\b" % p, line)), None)
        if prog is None:
            assert re.match(r"[A-Z]+=\$\(", line), "unexpected README line: " + line
            continue
        seen.add(prog)
        flags = set(re.findall(r"(?<=\s)--?([A-Za-z]\w*)", line))
        assert flags <= known[prog], "%s: unknown %s" % (prog, flags - known[prog])
        for path in re.findall(r"(?<=-config )\S+", line):
            assert (REPO / path).is_file(), path
    assert seen == set(known)  # prepare, vocab, train, translate, evaluate: all there
    decode = next(line for line in mirror_commands(corpus) if "onmt_translate" in line)
    for flags in ("-beam_size 10", "-max_length 40", "-min_length 3", "-length_penalty none",
                  "-mirror_z mean"):
        assert flags in decode


def movietriples_folder(path):
    """A synthetic folder in the documented MovieTriples format, from the demo windows."""
    path.mkdir()
    for split in ("train", "valid", "test"):
        src = (DEMO / (split + ".src")).read_text().splitlines()
        tgt = (DEMO / (split + ".tgt")).read_text().splitlines()
        lines = ["\t".join(s.split(" __eou__ ") + [t]).lower() for s, t in zip(src, tgt)]
        (path / (split + ".txt")).write_text("\n".join(lines) + "\n")
    return path


# README text -> what the tiny CPU run uses instead; each must occur exactly once.
TINY_RUN = {
    "dailydialog": {"--input ../shared/datasets/dailydialog": "--input %s" % (DEMO / "raw")},
    "movietriples": {"--input /path/to/MovieTriples": "--input {tmp}/movietriples_raw"},
}
for _corpus in TINY_RUN:
    TINY_RUN[_corpus].update({
        "onmt_train -config examples/%s/mirror.yaml" % _corpus:
        "onmt_train -config examples/%s/mirror.yaml %s" % (_corpus, TINY_FLAGS),
        " -gpu 0 ": " "})


N_TEST = 5  # test windows kept after step 1: beam-10 decoding is slow on CPU


@pytest.fixture(scope="module", params=list(RECIPES))
def readme_run(request, tmp_path_factory):
    """The README's commands, in order, in a fresh folder laid out like the repository."""
    corpus = request.param
    tmp = tmp_path_factory.mktemp(corpus)
    shutil.copytree(EXAMPLES / corpus, tmp / "examples" / corpus)
    if corpus == "movietriples":
        movietriples_folder(tmp / "movietriples_raw")
    script = "\n".join(mirror_commands(corpus))
    for old, new in TINY_RUN[corpus].items():
        assert script.count(old) == 1, "README changed: %r not found once" % old
        script = script.replace(old, new.format(tmp=tmp))
    prepare, rest = script.split("\n", 1)
    assert "onmt_mirror.prepare" in prepare
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"])
    for i, part in enumerate((prepare, rest)):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", part], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        if i == 0:
            for name in ("test.src", "test.tgt"):
                path = tmp / "data" / corpus / name
                path.write_text("".join(path.read_text().splitlines(True)[:N_TEST]))
    return corpus, tmp


def test_readme_run_trains_decodes_and_scores(readme_run):
    corpus, tmp = readme_run
    run, data = tmp / "run" / corpus, tmp / "data" / corpus
    log = (run / "train.log").read_text()
    assert re.search(r"Step +3/ +3;", log) and "Mirror step 3;" in log
    assert "Mirror validation;" in log and "Saving checkpoint run/%s/mirror_step_3.pt" % corpus in log
    assert len((data / "train.src").read_text().splitlines()) == 1606  # the demo slice
    preds = (run / "pred_mirror.txt").read_text().splitlines()
    assert len(preds) == N_TEST
    assert all(len(p.split()) >= 3 for p in preds)  # -min_length 3
    scores = json.loads((run / "scores.json").read_text())
    assert scores["mirror"]["n"] == N_TEST and 0 <= scores["mirror"]["bleu1"] <= 1


def test_checkpoint_keeps_every_recipe_value_but_the_tiny_overrides(readme_run):
    corpus, tmp = readme_run
    cfg = recipe(corpus)
    opt = vars(torch.load(tmp / "run" / corpus / "mirror_step_3.pt",
                          weights_only=True)["opt"])
    for key, value in cfg.items():
        if key == "data":
            continue
        want = TINY_TRAIN.get(key, value)
        got = opt[key]
        if isinstance(got, list) and not isinstance(want, list):
            got = got[0] if len(got) == 1 else got  # dropout, attention_dropout: lists
        assert got == want, (key, got, want)
    assert opt["mirror_z_size"] == 4 and opt["dec_layers"] == 2 and opt["enc_hid_size"] == 16
    assert opt["data"]["train"]["path_src"] == "data/%s/train.src" % corpus


def smoke(corpus):
    return yaml.safe_load((EXAMPLES / corpus / "cpu_smoke.yaml").read_text())


@pytest.mark.parametrize("corpus", RECIPES)
def test_cpu_smoke_config_is_the_recipe_at_toy_sizes_on_the_cpu(corpus, train_options):
    cfg, toy = recipe(corpus), smoke(corpus)
    unknown = sorted(set(toy) - train_options)
    assert not unknown, "onmt_train would silently ignore %s" % unknown
    assert toy["data"] == cfg["data"]  # the same prepared corpora and transform
    assert toy["encoder_type"] == cfg["encoder_type"] == "mirror"
    assert "gpu_ranks" not in toy and toy.get("model_dtype", "fp32") == "fp32"
    assert toy["hidden_size"] <= 64 and toy["src_vocab_size"] <= 5000
    assert toy["train_steps"] == toy["save_checkpoint_steps"] <= 200
    outputs = [toy[k] for k in ("save_data", "src_vocab", "save_model", "log_file")]
    assert all(path.startswith("run/%s_smoke/" % corpus) for path in outputs)
    checkpoint = "run/%s_smoke/mirror_step_%d.pt" % (corpus, toy["train_steps"])
    assert checkpoint in (EXAMPLES / corpus / "cpu_smoke.yaml").read_text()
    assert checkpoint in (EXAMPLES / corpus / "README.md").read_text()


def test_cpu_smoke_config_runs_with_paths_from_flags(tmp_path):
    """The README's override: corpora (-data, one YAML string) and every output from
    flags, run from a folder where the YAML's relative paths lead nowhere."""
    out, cwd = tmp_path / "out", tmp_path / "cwd"
    cwd.mkdir()
    corpora = {split: {"path_src": str(DEMO / (split + ".src")),
                       "path_tgt": str(DEMO / (split + ".tgt")),
                       "transforms": ["mirror_triple"]} for split in ("train", "valid")}
    data = yaml.safe_dump(corpora, default_flow_style=True, width=10000).strip()
    config = str(EXAMPLES / "dailydialog" / "cpu_smoke.yaml")
    vocab = ["-data", data, "-src_vocab", str(out / "vocab.txt")]
    for cmd in (["onmt_build_vocab", "-config", config, "-n_sample", "-1", "-save_data",
                 str(out / "samples")] + vocab,
                ["onmt_train", "-config", config, "-save_model", str(out / "m"),
                 "-log_file", str(out / "train.log"), "-train_steps", "2",
                 "-save_checkpoint_steps", "2", "-valid_steps", "2", "-report_every", "1",
                 "-num_workers", "0"]
                + vocab):
        proc = subprocess.run([os.path.join(BIN, cmd[0])] + cmd[1:], cwd=cwd,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(cwd.iterdir()) == []  # nothing went to the YAML's run/ or data/
    log = (out / "train.log").read_text()
    assert "Mirror step 2;" in log and "Mirror validation;" in log
    opt = vars(torch.load(out / "m_step_2.pt", weights_only=True)["opt"])
    assert opt["data"]["train"]["path_src"] == str(DEMO / "train.src")
    assert opt["src_vocab"] == str(out / "vocab.txt") and opt["hidden_size"] == 64
