"""The demo's shipped model, examples/demo/chat_model.pt (results/chat_model.yaml made it):
a released file (no optimizer, no training-only heads, fp16, small enough for the repo)
that decodes on a CPU to the replies it gave when shipped, with different replies for
different prior samples of z."""
import os

import torch

from cli_util import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT_MODEL = os.path.join(REPO, "examples", "demo", "chat_model.pt")
WINDOWS = ["So how did I do on my driving test ? __eou__ Do you want the truth ?",
           "Do you want the truth ? __eou__ Of course , I do ."]  # the demo's, lines 44-45
DECODE = ["-beam_size", "10", "-max_length", "40", "-min_length", "3", "-length_penalty",
          "none", "-ban_unk_token"]


def test_the_shipped_model_is_a_released_checkpoint():
    assert os.path.getsize(CHAT_MODEL) < 16 * 2 ** 20
    ckpt = torch.load(CHAT_MODEL, weights_only=False)
    assert ckpt["optim"] is None and ckpt["opt"].mirror_bow_weight == 0.0
    assert not any(k.startswith("bow_") for k in ckpt["model"])
    floats = [v for v in ckpt["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)


def test_the_shipped_model_replies_as_shipped_and_z_changes_the_reply(tmp_path):
    (tmp_path / "chat.src").write_text("".join(w + "\n" for w in WINDOWS))
    cli(["onmt_translate", "-model", CHAT_MODEL, "-src", "chat.src", "-output", "mean.txt",
         "-mirror_z", "mean"] + DECODE, tmp_path)
    cli(["onmt_translate", "-model", CHAT_MODEL, "-src", "chat.src", "-output", "k3.txt",
         "-mirror_num_z", "3", "-seed", "7"] + DECODE, tmp_path)
    assert (tmp_path / "mean.txt").read_text().splitlines() == [
        "Yes , I do .", "Well , I think you have a lot of money ."]
    assert (tmp_path / "k3.txt").read_text().splitlines() == [
        "What is it ?", "How much is it ?", "What's the matter ?",
        "That ’ s a good idea . I ’ m sure you ’ re right . I ’ m sure you ’ re going to be",
        "What are you talking about ?", "Why not ?"]
