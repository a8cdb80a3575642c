"""Dec1's beam step replayed from CUDA graphs, one per (beam rows, x width).

A step of OpenNMT-py's beam loop launches some 60 small kernels from Python: Dec1's two
LSTM cells and attention, the output layer and log-softmax, the beam's scoring and top-k,
and the reordering of the LSTM state. `BeamStep` records them once per shape and replays
them: the step's inputs (the last tokens, Dec1's state, z, x's encoder outputs and mask, the
beams' running log-probs) live in static buffers, and a replay leaves the next step's
tokens and reordered state there, so a step costs one launch and the beam's own host-side
bookkeeping (registration/decoding.py `captured_beam_search`, the stock loop's twin).

What the graph computes is what the stock `Translator._decode_and_generate` and
`BeamSearchBase.advance` compute, in the same order, with one difference: the top-k runs
on the log-probs before the length penalty divides them (a positive constant at each step,
so the same candidates win), because the penalty changes every step and a graph would bake
it in. The division then applies to the beam's k scores, as the stock `topk_scores` hold
them. Only rounding that makes two candidates equal after the division could pick another
tie. z and x's mask and memory are not reordered: the beam reorders rows within an input,
and those are equal for all beams of an input.

The first step of a shape runs eagerly; the second runs eagerly on the capture stream
(which warms cuBLAS for its shapes) and is captured; later ones replay. Capture is
"thread_local" for the same reason as the training step's (training/captured_step.py).
With graphs=False (tests on the CPU) every step runs the same code eagerly.
"""
from typing import NamedTuple

import torch


class BeamState(NamedTuple):
    """One step's inputs; rows = inputs x beam."""
    tokens: torch.Tensor  # (rows,) the beams' last tokens
    h: torch.Tensor  # (layers, rows, H) Dec1's LSTM state
    c: torch.Tensor
    z: torch.Tensor  # (rows, Z)
    memory: torch.Tensor  # (rows, S, H) x's encoder outputs, which Dec1 attends to
    mask: torch.Tensor  # (rows, S)
    log_probs: torch.Tensor  # (rows,) float32, each beam's running log-prob


class StepResult(NamedTuple):
    top: torch.Tensor  # (B, beam) the winners' log-probs, before the length penalty
    ids: torch.Tensor  # (B, beam) their tokens
    batch_index: torch.Tensor  # (B, beam) the rows they extend
    h: torch.Tensor  # Dec1's new state in the old row order (for dropping inputs)
    c: torch.Tensor


class BeamStep:
    MAX_GRAPHS = 64  # shapes captured; later new shapes run eagerly

    def __init__(self, model, beam_size, eos, unk, ban_unk, graphs=True):
        self.model, self.beam_size, self.eos, self.unk = model, beam_size, eos, unk
        self.ban_unk, self.graphs = ban_unk, graphs
        self.entries, self.seen = {}, set()
        self.pool = torch.cuda.graph_pool_handle() if graphs else None
        self.stream = torch.cuda.Stream() if graphs else None

    def step(self, state, eos_banned):
        """One beam step from `state` -> (StepResult, the next state).

        The next state's tokens are the winners and its LSTM state follows their rows; its
        log_probs are still this step's: the caller sets them (registration/decoding.py)."""
        key = (state.tokens.size(0), state.memory.size(1))
        entry = self.entries.get(key)
        if entry is None:
            if not self.graphs or key not in self.seen or len(self.entries) >= \
                    self.MAX_GRAPHS:
                self.seen.add(key)
                return self.run(state, eos_banned)
            return self.capture(key, state, eos_banned)
        graph, static, banned, result = entry
        for cur, buf in zip(state, static):
            if cur is not buf:
                buf.copy_(cur)
        banned.fill_(eos_banned)
        graph.replay()
        return result, static

    def run(self, s, eos_banned):
        """The step itself: eager (eos_banned a bool), or recorded into a graph (a bool
        tensor that each replay sets)."""
        m = self.model
        out, _, (h, c), _ = m.dec_y_cxz(m.embed(s.tokens[:, None], "y_cxz"), s.z,
                                        (s.h, s.c), s.memory, s.mask)
        log_probs = torch.log_softmax(m.generator(out[:, 0]), dim=-1)
        vocab = log_probs.size(-1)
        if torch.is_tensor(eos_banned):  # ensure_min_length
            log_probs[:, self.eos].masked_fill_(eos_banned, -65504)
        elif eos_banned:
            log_probs[:, self.eos] = -65504
        if self.ban_unk:
            log_probs[:, self.unk] = -65504
        log_probs += s.log_probs.view(-1, 1)
        top, ids = torch.topk(log_probs.view(-1, self.beam_size * vocab), self.beam_size)
        offset = torch.arange(0, ids.numel(), self.beam_size, device=ids.device)
        batch_index = ids // vocab + offset[:, None]
        ids = ids % vocab
        rows = batch_index.view(-1)
        return (StepResult(top, ids, batch_index, h, c),
                s._replace(tokens=ids.view(-1), h=h[:, rows], c=c[:, rows]))

    def capture(self, key, state, eos_banned):
        """This step eagerly on the capture stream, then recorded: static buffers in, the
        result and the next tokens and state (copied back into the buffers) out."""
        static = BeamState(*(t.clone() for t in state))
        banned = torch.tensor(eos_banned, device=state.h.device)

        def recorded():
            result, nxt = self.run(static, banned)
            for buf, new in zip(static[:3], nxt[:3]):
                buf.copy_(new)
            return result

        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            result, nxt = self.run(static, banned)
            graph = torch.cuda.CUDAGraph()
            graph.capture_begin(self.pool, capture_error_mode="thread_local")
            try:
                outputs = recorded()
            finally:
                graph.capture_end()
        self.entries[key] = (graph, static, banned, outputs)
        torch.cuda.current_stream().wait_stream(self.stream)
        return result, nxt
