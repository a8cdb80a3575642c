"""The terminal chat (`python -m onmt_mirror.chat --cli`), driven through its input stream.

The tiny model of test_server.py (trained once per session): "good morning !" after the
opening "hello ." is answered "hello ."; "how are you ?" after "hello ." has four trained
replies, told apart by z. Exact text is checked only where training leaves no choice
(the one reply of "good morning !"); where z decides, the checks are on the mechanism:
a new z per /z, K rows of z, and the reply decoded again from a recorded z is the same.
"""
import io
import os
import subprocess
import sys

import pytest
import torch

from onmt_mirror.chat import terminal
from onmt_mirror.chat.text import detokenize
from onmt_mirror.models import mirror
from test_server import CHECKPOINT, tiny_checkpoint

Q = "｟mirror_query｠"
OPTIONS = ["-beam_size", "5", "-max_length", "20", "-seed", "1"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(tiny_checkpoint(tmp_path_factory) / CHECKPOINT)


def talk(chat, lines):
    out, err = io.StringIO(), io.StringIO()
    terminal.run(chat, io.StringIO("".join(line + "\n" for line in lines)), out, err)
    return out.getvalue().splitlines(), err.getvalue().splitlines()


@pytest.fixture
def spy(monkeypatch):
    """Records each decoded source with the model's z mode (set `seen["model"]`), the
    torch random state at each draw of z, and the z drawn."""
    seen = {"src": [], "draws": [], "z": []}
    to_tensor, draw = terminal.textbatch_to_tensor, mirror.reparameterize

    def recording_to_tensor(vocabs, batch, device):
        seen["src"].append((batch[0]["src"]["src"], seen["model"].z_mode))
        return to_tensor(vocabs, batch, device)

    def recording_draw(mu, logvar):
        seen["draws"].append(torch.get_rng_state())
        seen["z"].append(draw(mu, logvar))
        return seen["z"][-1]

    monkeypatch.setattr(terminal, "textbatch_to_tensor", recording_to_tensor)
    monkeypatch.setattr(mirror, "reparameterize", recording_draw)
    return seen


def decoded_with(model_path, z, lines, monkeypatch):
    """What a fresh chat shows for `lines` when every draw of z gives `z`."""
    monkeypatch.setattr(mirror, "reparameterize", lambda mu, logvar: z.clone())
    return talk(terminal.Chat(terminal.parse_opt(["-model", model_path] + OPTIONS)),
                lines)[0]


def test_history_tokenising_commands_and_z(model_path, spy, monkeypatch):
    chat = terminal.Chat(terminal.parse_opt(["-model", model_path] + OPTIONS))
    spy["model"] = chat.model
    out, err = talk(chat, ["good morning!", "how are you?", "/z", "/z", "/new",
                           "Do you like tea? zorblax", "/oops", "x" * 20000, "/quit",
                           "never read"])
    # the opening is the first turn's context; then the kept reply is the context
    # (-mirror_context_turns 1); /z re-decodes the same window; /new starts again
    assert spy["src"] == [
        ("hello . %s good morning !" % Q, "mean"),
        ("hello . %s how are you ?" % Q, "mean"),
        ("hello . %s how are you ?" % Q, "sample"),
        ("hello . %s how are you ?" % Q, "sample"),
        ("hello . %s Do you like tea ? zorblax" % Q, "mean")]
    assert len(spy["draws"]) == 2 and not torch.equal(*spy["draws"])  # a new z per /z
    assert not torch.equal(*spy["z"])
    assert out[0] == "mirror: hello."
    assert out[1].startswith("mirror: ") and len(out[1]) > 8
    assert [o[:20] for o in out[2:4]] == ["mirror (z sampled): "] * 2
    assert len(out) == 5 and out[4].startswith("mirror: ")
    for z, shown in zip(spy["z"], out[2:4]):  # each sampled reply is its z's reply
        assert decoded_with(model_path, z, ["how are you?", "/z"], monkeypatch)[1] == shown
    long_window = len(" __eou__ ".join([chat.history[1], "x" * 20000]))
    assert err[1:] == [
        "(a new conversation)",
        "(not in the model's vocabulary, read as <unk>: Do zorblax)",
        "(unknown command /oops) " + terminal.HELP,
        "(refused: history too long: %d characters (at most 10000))" % long_window]
    assert chat.history[0] == "Do you like tea ? zorblax" and len(chat.history) == 2


def test_the_same_seed_gives_the_same_conversation(model_path):
    lines = ["how are you?", "/z", "/z", "/z"]
    runs = [talk(terminal.Chat(terminal.parse_opt(["-model", model_path] + OPTIONS)),
                 lines)[0] for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 4


def test_n_best_and_k_samples_of_z(model_path, spy):
    chat = terminal.Chat(terminal.parse_opt(
        ["-model", model_path, "-n_best", "2", "-mirror_num_z", "3"] + OPTIONS))
    spy["model"] = chat.model
    out, _ = talk(chat, ["how are you?", "/z"])
    assert len(out) == 2 + 6  # n_best replies, then K x n_best sampled ones
    assert out[0].startswith("mirror: ") and out[1].startswith("  2. ")
    assert out[2].startswith("mirror (z sampled): ")
    assert [o.split(". ")[0] for o in out[3:]] == ["  2", "  3", "  4", "  5", "  6"]
    assert len(spy["draws"]) == 1  # one decode: the batch tiled 3 times, 3 rows of z
    assert spy["z"][0].size(0) == 3 and not torch.equal(spy["z"][0][0], spy["z"][0][1])
    assert detokenize(chat.history[-1]) == out[2][20:]  # the first shown is kept


def test_command_line_reads_stdin(model_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "onmt_mirror.chat", "--cli", "-model", model_path]
        + OPTIONS, input="good morning!\n",
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "mirror: hello."
    assert "Traceback" not in proc.stderr
