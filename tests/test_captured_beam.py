"""Mirror's beam loop with Dec1's step from translate/captured_beam.py.

The stock Translator drives test_multi_z's tiny random Mirror (replies that end at
different steps, so inputs drop out of the beam); the loop of registration/decoding.py
must write the stock beam search's hypotheses and scores, also under -mirror_num_z. On the CPU the step runs
eagerly; on a GPU from CUDA graphs (capture, then replays, the min-length ban switching
inside a replayed shape).
"""
import pytest
import torch

from conftest import BOS, EOS
from onmt_mirror.registration.decoding import captured_beam_reason
from onmt_mirror.translate.captured_beam import BeamState, BeamStep
from test_multi_z import batch, decoding_model, tokens, translator

SETTINGS = {
    "fixed length": ["-min_length", "6", "-max_length", "6"],
    "inputs finish": ["-min_length", "1", "-max_length", "8", "-n_best", "2"],
    "min length, average penalty": ["-min_length", "3", "-max_length", "8",
                                    "-length_penalty", "avg"],
    "wu penalty, ratio, unk banned": ["-length_penalty", "wu", "-alpha", "0.6",
                                      "-ratio", "0.5", "-ban_unk_token", "-beam_size", "4"],
    "3 samples of z, re-ranked": ["-mirror_num_z", "3", "-mirror_rerank", "-n_best", "2"],
}


def decode_both(setting, device="cpu", graphs=False, dtype=torch.float32):
    """(ours, stock, the step): the same batch through the captured loop and the stock."""
    model = decoding_model().to(device, dtype)
    t = translator(model, *SETTINGS[setting])
    t.beam_step = step = BeamStep(model, t.beam_size, t._tgt_eos_idx, t._tgt_unk_idx,
                                  t.ban_unk_token, graphs=graphs)
    step.calls = 0
    step_of = step.step

    def counted(*args):
        step.calls += 1
        return step_of(*args)

    step.step = counted
    on = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch().items()}
    torch.manual_seed(5)  # the z samples of -mirror_num_z
    ours = t.translate_batch(on, False)
    t.beam_step = None
    torch.manual_seed(5)
    return ours, t.translate_batch(on, False), step


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_the_loop_writes_the_stock_beam_search(setting):
    ours, stock, step = decode_both(setting)
    assert step.calls >= 6
    assert tokens(ours) == tokens(stock)
    assert ours["scores"] == stock["scores"]
    if setting == "inputs finish":  # inputs left the beam: the step saw fewer rows
        assert len({rows for rows, _ in step.seen}) > 1


def test_the_replayed_min_length_ban_is_the_eager_one():
    """A graph takes the ban as a device flag (a replay sets it), the eager step as a
    bool: the same log-probs, so the same winners, either way."""
    model = decoding_model()
    with torch.no_grad():
        model.generator.bias[EOS] += 20.0  # </s> wins wherever it is allowed
    step = BeamStep(model, 3, EOS, 0, False, graphs=False)
    g = torch.Generator().manual_seed(0)
    rows, width, hidden = 6, 4, model.cfg.hidden_size
    state = BeamState(torch.full((rows,), BOS), torch.randn(2, rows, hidden, generator=g),
                      torch.randn(2, rows, hidden, generator=g),
                      torch.randn(rows, model.cfg.z_size, generator=g),
                      torch.randn(rows, width, hidden, generator=g),
                      torch.ones(rows, width, dtype=torch.bool), torch.zeros(rows))
    for banned in (True, False):
        with torch.no_grad():
            eager, _ = step.run(state, banned)
            flagged, _ = step.run(state, torch.tensor(banned))
        for a, b in zip(eager, flagged):
            assert torch.equal(a, b)
        assert bool(eager.ids.eq(EOS).any()) is not banned


def test_stock_step_where_no_graph_can_replay_it():
    model = decoding_model()
    t = translator(model)
    assert t.beam_step is None  # on the CPU
    assert captured_beam_reason(None, model, t) == "not on a GPU"
    t.block_ngram_repeat = 2
    t.replace_unk = True
    assert captured_beam_reason(None, model, t) == \
        "not on a GPU, -block_ngram_repeat, -replace_unk"


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@cuda
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_graph_replay_writes_the_stock_beam_search(setting, dtype, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    ours, stock, step = decode_both(setting, "cuda", graphs=True, dtype=dtype)
    assert step.entries  # a shape was captured and replayed
    assert tokens(ours) == tokens(stock)
    assert ours["scores"] == stock["scores"]
