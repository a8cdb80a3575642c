"""The demo's shipped model, examples/demo/chat_model.pt (results/chat_model.yaml made it):
a released file (no optimizer, no training-only heads, fp16, small enough for the repo)
that decodes on a CPU to the replies it gave when shipped, with different replies for
different prior samples of z."""
import os

import torch

from cli_util import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT_MODEL = os.path.join(REPO, "examples", "demo", "chat_model.pt")
WINDOWS = ["Hey man , you wanna buy some weed ? __eou__ Some what ?",
           "Some what ? __eou__ Weed ! You know ? Pot , Ganja , Mary Jane some chronic !"]
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
        "Well , I want to go to the cinema .", "Oh , yes . How about you ?"]
    assert (tmp_path / "k3.txt").read_text().splitlines() == [
        "Well , it is a lot of money .", "What are you going to do ?", "Why not ?",
        "Oh , really ?", "Oh , really ?", "What are you talking about ?"]
