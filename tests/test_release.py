"""`python -m onmt_mirror.release`: what it drops, what it keeps, and that decoding with the
released file is the same model (the bag-of-words heads, Dec2 and Dec4 are training losses
only; Dec3 re-ranks K samples, so it stays)."""
import torch

from cli_util import cli, mirror_config, write_corpus

from onmt_mirror.errors import EXIT_STATUS


def _train(tmp_path):
    write_corpus(tmp_path)
    cfg = mirror_config(tmp_path, mirror_bow_weight=1.0, train_steps=20,
                        save_checkpoint_steps=20, valid_steps=20)
    cli(["onmt_build_vocab", "-config", cfg, "-n_sample", "-1"], tmp_path)
    cli(["onmt_train", "-config", cfg], tmp_path)
    return tmp_path / "run" / "model_step_20.pt"


def _translate(tmp_path, model, output):
    """Dec1's beam, and 3 prior samples re-ranked with Dec3's log p(x|c,z,y)."""
    cli(["onmt_translate", "-model", str(model), "-src", "train.src", "-output", output,
         "-beam_size", "3", "-max_length", "8"], tmp_path)
    cli(["onmt_translate", "-model", str(model), "-src", "train.src", "-output",
         "k3." + output, "-beam_size", "3", "-max_length", "8", "-mirror_num_z", "3",
         "-seed", "1", "-mirror_rerank", "-mirror_rerank_lambda", "0.5"], tmp_path)
    return (tmp_path / output).read_text(), (tmp_path / ("k3." + output)).read_text()


def test_release_drops_optimizer_and_heads_casts_and_decodes_the_same(tmp_path):
    ckpt = _train(tmp_path)
    for dtype in ("fp16", "fp32"):
        cli(["python", "-m", "onmt_mirror.release", "--model", str(ckpt), "--output",
             "run/%s.pt" % dtype, "--dtype", dtype], tmp_path)
    full = torch.load(ckpt, weights_only=False)
    half = torch.load(tmp_path / "run" / "fp16.pt", weights_only=False)
    assert full["optim"] is not None and half["optim"] is None
    heads = {k for k in full["model"] if k.startswith("bow_")}
    dec2_dec4 = {k for k in full["model"] if k.split(".")[0] in {
        part + "_" + d for part in ("dec", "emb", "readout") for d in ("x_cz", "y_cz")}}
    assert heads and dec2_dec4 and any(k.startswith("dec_x_cyz.") for k in half["model"])
    assert set(full["model"]) - set(half["model"]) == heads | dec2_dec4
    assert full["opt"].mirror_bow_weight == 1.0 and half["opt"].mirror_bow_weight == 0.0
    assert half["opt"].mirror_decoders == "y_cxz,x_cyz"
    for part in ("model", "generator"):
        for k, v in half[part].items():
            was = full[part][k]
            assert v.dtype == (torch.float16 if was.is_floating_point() else was.dtype)
            assert torch.equal(v, was.to(v.dtype))
    # at full precision, decoding and Dec3's re-ranking are exactly the trained model's
    assert _translate(tmp_path, "run/fp32.pt", "fp32.txt") == \
        _translate(tmp_path, ckpt, "full.txt")
    beam, k3 = _translate(tmp_path, "run/fp16.pt", "fp16.txt")
    assert len(beam.splitlines()) == 6 and len(k3.splitlines()) == 6


def test_release_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_text("not a checkpoint")
    proc = cli(["python", "-m", "onmt_mirror.release", "--model", "x.pt", "--output",
                "y.pt"], tmp_path, ok=False)
    assert proc.returncode == EXIT_STATUS
    assert proc.stderr.splitlines() == [
        "onmt_mirror.release: error: x.pt is not a complete checkpoint (truncated, or not "
        "written by torch.save)"]
    assert not (tmp_path / "y.pt").exists()
