"""The sentence encoder of Mirror's context and utterances (and of HRED's turns)."""
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from onmt_mirror.errors import MirrorError
from onmt_mirror.modules.lstm import LSTM
from onmt_mirror.modules.padding import PackPlan, lengths_to_mask


class RNNEncoder(nn.Module):
    """A (bi)LSTM over embedded tokens that honours lengths (the reference let padding
    leak into its sentence vectors). The sentence vector is the final (h, c) of every
    layer through Linear+ReLU, as in the reference."""

    def __init__(self, emb_size, hidden, layers, dropout, bidirectional):
        super().__init__()
        if bidirectional and hidden % 2:
            raise MirrorError("-mirror_bidirectional needs an even -hidden_size")
        self.dirs = 2 if bidirectional else 1
        self.lstm = LSTM(emb_size, hidden // self.dirs, layers, batch_first=True,
                         dropout=dropout if layers > 1 else 0.0,
                         bidirectional=bidirectional)
        self.to_vec = nn.Sequential(nn.Linear(2 * layers * hidden, hidden), nn.ReLU())

    def forward(self, emb, lengths, pack=True):
        """emb: (B, L, E), lengths: (B,) -> out (B, L, H), zero at padding, vec (B, H).

        pack=True reads the lengths on the host and packs (cuDNN skips the padding);
        pack=False keeps every shape the batch's and the lengths on the device, which a
        CUDA graph can replay (the captured training step)."""
        if not pack:
            return self.forward_padded(emb, lengths)
        plan = PackPlan(lengths, emb.size(1), emb.device)
        packed, (h, c) = self.lstm(plan.pack(emb))
        out = plan.unpack(packed.data)
        B = emb.size(0)
        # (layers*dirs, B, H/dirs) -> (B, layers*H): directions of a layer side by side
        h = h.view(-1, self.dirs, B, h.size(-1)).permute(2, 0, 1, 3).reshape(B, -1)
        c = c.view(-1, self.dirs, B, c.size(-1)).permute(2, 0, 1, 3).reshape(B, -1)
        return out, self.to_vec(torch.cat([h, c], -1))

    def forward_padded(self, emb, lengths):
        """The same function over the padded batch, one cuDNN call a layer. Outputs at
        real positions do not see the padding after them; h at each row's last token is
        its final h. The final cell state is recomputed there in closed form from the
        layer's gates, c_T = sum_s (prod_{s<r<=T} f_r) i_s g_s, through a cumulative sum of
        log f: the exact value and gradient for one more gate GEMM a layer."""
        if self.dirs != 1:
            raise MirrorError("a bidirectional encoder reads padding backwards: it needs "
                              "packing (pack=True)")
        lstm, (B, T, _) = self.lstm, emb.shape
        keep = lengths_to_mask(lengths, T)[..., None]
        last = (lengths - 1)[:, None, None].expand(B, 1, lstm.hidden_size)
        inp, hs, cs = emb, [], []
        for k in range(lstm.num_layers):
            if k:
                inp = F.dropout(out, lstm.dropout, lstm.training)
            w = [getattr(lstm, n % k) for n in ("weight_ih_l%d", "weight_hh_l%d",
                                                "bias_ih_l%d", "bias_hh_l%d")]
            h0 = inp.new_zeros(1, B, lstm.hidden_size)
            with warnings.catch_warnings():
                # a layer's weights are a slice of the LSTM's one cuDNN buffer, so cuDNN
                # copies them into one of their own (a few microseconds) and warns each call
                warnings.filterwarnings("ignore", "RNN module weights are not part")
                out, _, _ = torch._VF.lstm(inp, (h0, h0), w, True, 1, 0.0, lstm.training,
                                           False, True)
            h_prev = F.pad(out, (0, 0, 1, 0))[:, :-1]
            gates = (F.linear(inp, w[0], w[2]) + F.linear(h_prev, w[1], w[3])).float()
            i, f, g, _ = gates.chunk(4, -1)
            log_f = F.logsigmoid(f).cumsum(1)
            decay = (log_f.gather(1, last) - log_f).masked_fill(~keep, float("-inf")).exp()
            cs.append((decay * torch.sigmoid(i) * torch.tanh(g)).sum(1).to(out.dtype))
            hs.append(out.gather(1, last)[:, 0])
        return out * keep.to(out.dtype), self.to_vec(torch.cat(hs + cs, -1))
