"""The stock CLIs with the plugin: build vocab, train to overfit, beam-decode, resume.

A tiny Mirror trained by the stock onmt_train on six dialogues must reproduce their
responses through the stock onmt_translate (beam 5, z = prior mean); -train_from must
continue with the optimizer step and the KL-annealing counter of the checkpoint.
"""
import pytest
import torch

from cli_util import DIALOGUES, cli, mirror_config, write_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    write_corpus(tmp)
    # num_workers 0: no data worker to start (the log must still get every line)
    mirror_config(tmp, num_workers=0, word_vec_size=24, hidden_size=48, mirror_z_size=8,
                  mirror_kl_anneal_steps=40, save_checkpoint_steps=300, train_steps=300,
                  valid_steps=300, report_every=50, batch_size=6)
    cli(["onmt_build_vocab", "-config", "mirror.yaml", "-n_sample", "-1"], tmp)
    cli(["onmt_train", "-config", "mirror.yaml"], tmp)
    return tmp


def test_tiny_model_overfits_and_beam_search_reproduces_responses(trained):
    log = (trained / "run/train.log").read_text()
    assert "Mirror step 300;" in log and "ppl_x_cyz" in log
    assert "Mirror validation;" in log and "ppl_y_cxz_prior" in log
    assert "Mirror training step: eager (not on a GPU)" in log
    cli(["onmt_translate", "-model", "run/model_step_300.pt", "-src", "train.src",
         "-output", "pred.txt", "-beam_size", "5", "-max_length", "20"], trained)
    preds = (trained / "pred.txt").read_text().splitlines()
    assert preds == [y for _, _, y in DIALOGUES]


def test_prior_sample_decoding_is_seeded(trained):
    outs = []
    for seed in (7, 7):
        cli(["onmt_translate", "-model", "run/model_step_300.pt", "-src", "train.src",
             "-output", "sample%d.txt" % len(outs), "-beam_size", "3",
             "-mirror_z", "sample", "-seed", str(seed)], trained)
        outs.append((trained / ("sample%d.txt" % len(outs))).read_text())
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == len(DIALOGUES)


def test_train_from_continues_step_and_kl_annealing(trained):
    cli(["onmt_train", "-config", "mirror.yaml", "-train_from", "run/model_step_300.pt",
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
