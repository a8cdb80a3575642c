"""The stock CLIs with the plugin: build vocab, train to overfit, beam-decode, resume.

A tiny Mirror trained by the stock onmt_train on six dialogues must reproduce their
responses through the stock onmt_translate (beam 5, z = prior mean); -train_from must
continue with the optimizer step and the KL-annealing counter of the checkpoint.
"""
import os
import subprocess
import sys

import pytest
import torch
import yaml

DIALOGUES = [
    ("do you like tea ?", "yes , very much .", "then let us have some tea ."),
    ("where is the station ?", "it is near the bank .", "thank you , i will walk there ."),
    ("what time is it ?", "it is five o'clock .", "oh no , i am late for work ."),
    ("can you help me ?", "sure , what is wrong ?", "my car will not start today ."),
    ("how was your trip ?", "it was wonderful .", "i am glad you enjoyed it ."),
    ("is it raining outside ?", "no , it is sunny .", "great , let us go to the park ."),
]
BIN = os.path.dirname(sys.executable)


def run(cmd, cwd, **env):
    full_env = dict(os.environ, **env)
    proc = subprocess.run([os.path.join(BIN, cmd[0])] + cmd[1:], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def write_config(tmp_path, **overrides):
    (tmp_path / "train.src").write_text(
        "".join("%s __eou__ %s\n" % (c, x) for c, x, _ in DIALOGUES))
    (tmp_path / "train.tgt").write_text("".join(y + "\n" for _, _, y in DIALOGUES))
    corpus = {"path_src": "train.src", "path_tgt": "train.tgt",
              "transforms": ["mirror_triple"]}
    cfg = {"save_data": "run/sample", "src_vocab": "run/vocab.txt", "share_vocab": True,
           "overwrite": True, "data": {"train": corpus, "valid": dict(corpus)},
           "encoder_type": "mirror", "word_vec_size": 24, "hidden_size": 48, "layers": 1,
           "mirror_z_size": 8, "dropout": 0.0, "input_feed": 0,
           "mirror_kl_anneal_steps": 40, "save_model": "run/model",
           "save_checkpoint_steps": 300, "train_steps": 300, "valid_steps": 300,
           "report_every": 50, "batch_type": "sents", "batch_size": 6, "optim": "adam",
           "learning_rate": 0.01, "param_init": 0.1, "seed": 3, "num_workers": 1,
           "bucket_size": 64, "log_file": "run/train.log"}
    cfg.update(overrides)
    (tmp_path / "mirror.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "mirror.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    write_config(tmp)
    run(["onmt_build_vocab", "-config", "mirror.yaml", "-n_sample", "-1"], tmp)
    run(["onmt_train", "-config", "mirror.yaml"], tmp)
    return tmp


def test_tiny_model_overfits_and_beam_search_reproduces_responses(trained):
    log = (trained / "run/train.log").read_text()
    assert "Mirror step 300;" in log and "ppl_x_cyz" in log
    assert "Mirror validation;" in log and "ppl_y_cxz_prior" in log
    (trained / "test.src").write_text(
        "".join("%s __eou__ %s\n" % (c, x) for c, x, _ in DIALOGUES))
    run(["onmt_translate", "-model", "run/model_step_300.pt", "-src", "test.src",
         "-output", "pred.txt", "-beam_size", "5", "-max_length", "20"], trained)
    preds = (trained / "pred.txt").read_text().splitlines()
    assert preds == [y for _, _, y in DIALOGUES]


def test_prior_sample_decoding_is_seeded(trained):
    outs = []
    for seed in (7, 7):
        run(["onmt_translate", "-model", "run/model_step_300.pt", "-src", "train.src",
             "-output", "sample%d.txt" % len(outs), "-beam_size", "3",
             "-mirror_z", "sample", "-seed", str(seed)], trained)
        outs.append((trained / ("sample%d.txt" % len(outs))).read_text())
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == len(DIALOGUES)


def test_train_from_continues_step_and_kl_annealing(trained):
    run(["onmt_train", "-config", "mirror.yaml", "-train_from", "run/model_step_300.pt",
         "-train_steps", "310", "-save_checkpoint_steps", "310", "-report_every", "10",
         "-log_file",
         "run/resume.log"], trained)
    ckpt = torch.load(trained / "run/model_step_310.pt", weights_only=True)
    assert ckpt["optim"]["training_step"] == 311
    # one data batch per step: 300 + 10 training batches seen by the annealing counter
    assert int(ckpt["model"]["kl_annealing.step"]) == 310
    resumed = (trained / "run/resume.log").read_text()
    assert "Step 310/" in resumed and "Loading checkpoint" in resumed
    assert "Mirror step 310;" in resumed and "kl_weight: 1" in resumed
