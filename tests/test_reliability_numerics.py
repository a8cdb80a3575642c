"""Numerical faults in a real onmt_train run (tests/reliability_faults.py injects them):
a NaN stops the run naming step and term, or (-mirror_nonfinite skip) the batch is
skipped without touching weights or optimizer; KL collapse is a warning in the log."""
import re

import pytest
import torch

from cli_util import cli, error_line, mirror_config, write_corpus

E = "onmt_mirror: error: "


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("numerics")
    write_corpus(tmp)
    mirror_config(tmp, train_steps=6, save_checkpoint_steps=2, valid_steps=100,
                  num_workers=0)  # no data worker to start in each run
    cli(["onmt_build_vocab", "-config", "mirror.yaml", "-n_sample", "-1"], tmp)
    return tmp


def train_with(work, fault, name, *args):
    code = "import reliability_faults as f; f.%s; f.train()" % fault
    return cli(["python", "-c", code, "-config", "mirror.yaml", "-save_model",
                "run/" + name, *args], work, ok=False)


def weights(path):
    ckpt = torch.load(path, weights_only=True)
    return ckpt["model"], ckpt["generator"], ckpt["optim"]["optimizer"]["state"]


def test_nan_loss_term_stops_naming_step_and_term(work):
    out = train_with(work, "nan_term('kl', {3})", "stop")
    assert error_line(out) == E + ("step 3: non-finite loss term(s) kl=nan; stopped "
                                   "before updating the weights (-mirror_nonfinite skip "
                                   "skips such batches)")
    assert sorted(p.name for p in work.glob("run/stop*.pt")) == ["stop_step_2.pt"]


def test_nan_parameter_stops_before_an_update(work):
    out = train_with(work, "nan_parameter({5})", "param")
    line = error_line(out)
    assert line.startswith(E + "step 5: non-finite loss term(s) ") and "kl=nan" in line
    assert sorted(p.name for p in work.glob("run/param*.pt")) == [
        "param_step_2.pt", "param_step_4.pt"]
    model, _, _ = weights(work / "run/param_step_4.pt")
    assert all(torch.isfinite(v).all() for v in model.values())


def test_skip_leaves_weights_and_optimizer_untouched(work):
    out = train_with(work, "nan_term('nll_x_cz', {3, 4})", "skip",
                     "-mirror_nonfinite", "skip")
    assert out.returncode == 0, out.stderr[-3000:]
    skipped = re.findall(r"WARNING\] (.*batch skipped.*)", out.stderr)
    assert skipped == ["step %d: non-finite loss term(s) nll_x_cz=nan: batch skipped "
                       "(-mirror_nonfinite skip)" % s for s in (3, 4)]
    assert "Step 4/    6; no batch to report (skipped: non-finite loss)" in out.stderr
    model2, gen2, adam2 = weights(work / "run/skip_step_2.pt")
    model4, gen4, adam4 = weights(work / "run/skip_step_4.pt")
    model6, _, _ = weights(work / "run/skip_step_6.pt")
    assert int(model4.pop("kl_annealing.step")) == 4  # batches seen, skipped included
    assert int(model2.pop("kl_annealing.step")) == 2
    assert all(torch.equal(model2[k], model4[k]) for k in model2)
    assert all(torch.equal(gen2[k], gen4[k]) for k in gen2)
    assert all(torch.equal(adam2[i][k], adam4[i][k]) for i in adam2 for k in adam2[i])
    assert not torch.equal(model4["posterior_net.mean.weight"],
                           model6["posterior_net.mean.weight"])  # training went on
    assert all(torch.isfinite(v).all() for v in model6.values())
    assert "KL collapse" not in out.stderr  # the default threshold is not reached


def test_kl_collapse_is_a_warning_once_per_collapse(work):
    out = cli(["onmt_train", "-config", "mirror.yaml", "-save_model", "run/kl",
               "-mirror_kl_collapse_threshold", "1e9", "-mirror_kl_collapse_steps", "3"],
              work)
    warnings = re.findall(r"WARNING\] (.*KL collapse.*)", out.stderr)
    assert len(warnings) == 1
    assert re.fullmatch(r"step 3: KL collapse: KL\(q\|\|p\) per sentence has averaged "
                        r"[0-9.e+-]+ over the last 3 training batches, under 1e\+09: z "
                        r"carries almost no information \(docs/latent.md: remedies\)",
                        warnings[0])


def test_skip_is_refused_with_fp16(work):
    """Skipping leaves no gradients, which torch's GradScaler.step rejects."""
    out = cli(["onmt_train", "-config", "mirror.yaml", "-model_dtype", "fp16",
               "-mirror_nonfinite", "skip", "-save_model", "run/fp16"], work, ok=False)
    assert error_line(out) == E + ("-mirror_nonfinite skip does not work with "
                                   "-model_dtype fp16 (its gradient scaler already skips "
                                   "non-finite steps): use -mirror_nonfinite stop")
    assert not list(work.glob("run/fp16*"))
