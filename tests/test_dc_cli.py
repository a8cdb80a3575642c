"""DC through the stock CLIs: fit the side models, decode with onmt_translate, tune α/β.

A tiny stock seq2seq (the Seq2SeqAttn baseline: `transforms: [mirror_triple]`) trains on a
few dialogues; α = β = 0 must give a byte-identical prediction file to plain onmt_translate,
and large weights must raise the constrained outputs' similarity to their sources.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

DIALOGUES = [
    ("do you like tea ?", "yes , very much .", "then let us have some green tea ."),
    ("where is the station ?", "it is near the bank .", "thank you , i will walk there ."),
    ("what time is it ?", "it is five o'clock .", "oh no , i am late for work ."),
    ("can you help me ?", "sure , what is wrong ?", "my car will not start today ."),
    ("how was your trip ?", "it was wonderful .", "i am glad you enjoyed the trip ."),
    ("is it raining outside ?", "no , it is sunny .", "great , let us go to the park ."),
    ("do you want coffee ?", "no , i want tea .", "ok , i will make you tea ."),
    ("is your car broken ?", "yes , it will not start .", "i can fix your car today ."),
]
BIN = os.path.dirname(sys.executable)


def run(cmd, cwd, check=True):
    exe = [sys.executable, "-m", "onmt_mirror.dc"] if cmd[0] == "dc" else \
        [os.path.join(BIN, cmd[0])]
    proc = subprocess.run(exe + cmd[1:], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dc")
    (tmp / "train.src").write_text("".join("%s __eou__ %s\n" % (c, x)
                                           for c, x, _ in DIALOGUES))
    (tmp / "train.tgt").write_text("".join(y + "\n" for _, _, y in DIALOGUES))
    corpus = {"path_src": "train.src", "path_tgt": "train.tgt",
              "transforms": ["mirror_triple"]}
    cfg = {"save_data": "run/sample", "src_vocab": "run/vocab.txt", "share_vocab": True,
           "overwrite": True, "data": {"train": corpus, "valid": dict(corpus)},
           "word_vec_size": 16, "hidden_size": 32, "layers": 1, "dropout": 0.0,
           "save_model": "run/s2s", "save_checkpoint_steps": 60, "train_steps": 60,
           "valid_steps": 60, "report_every": 30, "batch_type": "sents", "batch_size": 8,
           "optim": "adam", "learning_rate": 0.01, "param_init": 0.1, "seed": 3,
           "num_workers": 0, "bucket_size": 64}  # default 262144: cycles the 8 lines
    (tmp / "s2s.yaml").write_text(yaml.safe_dump(cfg))
    run(["onmt_build_vocab", "-config", "s2s.yaml", "-n_sample", "-1"], tmp)
    run(["onmt_train", "-config", "s2s.yaml"], tmp)
    out = run(["dc", "fit", "--train-src", "train.src", "--train-tgt", "train.tgt",
               "--model", "run/s2s_step_60.pt", "--topics", "3", "--min-df", "1",
               "--max-df", "0.3", "--lda-iter", "5"], tmp)
    assert "wrote run/s2s_step_60.dc" in out.stdout
    return tmp


def translate(cwd, output, *extra):
    return run(["onmt_translate", "-model", "run/s2s_step_60.pt", "-src", "train.src",
                "-output", output, "-beam_size", "4", "-max_length", "12",
                "-length_penalty", "none", "-n_best", "2"] + list(extra), cwd)


def test_fit_writes_settings_next_to_the_checkpoint(trained):
    settings = json.loads((trained / "run/s2s_step_60.dc/settings.json").read_text())
    assert settings["n_topics"] == 3 and settings["windows"] == len(DIALOGUES)
    assert settings["embedding_key"].startswith("decoder.embeddings")
    assert "HMM-LDA" in settings["topic_model"] and settings["sif_a"] == 1e-3


def test_zero_weights_give_the_stock_prediction_file_byte_for_byte(trained):
    translate(trained, "stock.txt")
    log = translate(trained, "zero.txt", "-dc_model", "run/s2s_step_60.dc",
                    "-dc_alpha", "0", "-dc_beta", "0").stderr
    assert "DC decoding: alpha 0 (topic), beta 0 (SIF)" in log
    assert (trained / "stock.txt").read_bytes() == (trained / "zero.txt").read_bytes()


def test_constraints_raise_similarity_to_the_source(trained):
    import torch

    from onmt_mirror.dc.scorer import DCScorer
    from onmt_mirror.dc.side_models import SideModels

    translate(trained, "stock1.txt", "-n_best", "1")
    translate(trained, "dc.txt", "-n_best", "1", "-dc_model", "run/s2s_step_60.dc",
              "-dc_alpha", "20", "-dc_beta", "20")
    side = SideModels.load(str(trained / "run/s2s_step_60.dc"))
    words = sorted({t for line in (trained / "train.src").read_text().split("\n")
                    for t in line.split()} | {t for p in ("stock1.txt", "dc.txt")
                                              for t in (trained / p).read_text().split()})
    scorer = DCScorer(side, words, words, 1.0, 1.0)
    index = {w: i for i, w in enumerate(words)}

    def mean_sim(pred_file):
        total = 0.0
        srcs = (trained / "train.src").read_text().splitlines()
        hyps = (trained / pred_file).read_text().splitlines()
        for s, h in zip(srcs, hyps):
            for k in ("topic", "sif"):
                a = scorer.tgt[k][[index[t] for t in s.split() if t != "__eou__"]].sum(0)
                b = scorer.tgt[k][[index[t] for t in h.split()]].sum(0)
                total += float(torch.nn.functional.cosine_similarity(a, b, dim=0,
                                                                     eps=1e-8))
        return total / len(srcs)

    assert mean_sim("dc.txt") > mean_sim("stock1.txt")


def test_tune_grid_writes_results_and_best(trained):
    out = run(["dc", "tune", "--model", "run/s2s_step_60.pt", "--dc-model",
               "run/s2s_step_60.dc", "--src", "train.src", "--tgt", "train.tgt",
               "--out", "tune", "--alphas", "0,3", "--betas", "0", "--limit", "4", "--",
               "-beam_size", "3", "-max_length", "10"], trained)
    result = json.loads((trained / "tune/tune.json").read_text())
    assert [(r["alpha"], r["beta"]) for r in result["grid"]] == [(0, 0), (3, 0)]
    assert result["windows"] == 4 and "bleu2" in result["grid"][0]
    assert "best: -dc_alpha" in out.stdout and (trained / "tune/tune.md").exists()


def test_recipe_is_a_valid_onmt_translate_config(trained):
    recipe = os.path.join(os.path.dirname(__file__), "..", "examples", "dailydialog",
                          "dc.yaml")
    translate(trained, "recipe.txt", "-config", os.path.abspath(recipe), "-src",
              "train.src", "-dc_model", "run/s2s_step_60.dc", "-gpu", "-1")
    assert len((trained / "recipe.txt").read_text().splitlines()) == 2 * len(DIALOGUES)


def test_bad_dc_model_is_one_line_error(trained):
    proc = run(["onmt_translate", "-model", "run/s2s_step_60.pt", "-src", "train.src",
                "-output", "x.txt", "-dc_model", "nowhere"], trained, check=False)
    assert proc.returncode != 0
    assert "onmt_mirror: error: -dc_model nowhere: not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr
