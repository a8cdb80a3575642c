"""The sentence encoder of Mirror's context and utterances (and of HRED's turns)."""
import torch
import torch.nn as nn

from onmt_mirror.errors import MirrorError
from onmt_mirror.modules.lstm import LSTM
from onmt_mirror.modules.padding import PackPlan


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

    def forward(self, emb, lengths):
        # emb: (B, L, E), lengths: (B,) -> out (B, L, H), vec (B, H)
        plan = PackPlan(lengths, emb.size(1), emb.device)
        packed, (h, c) = self.lstm(plan.pack(emb))
        out = plan.unpack(packed.data)
        B = emb.size(0)
        # (layers*dirs, B, H/dirs) -> (B, layers*H): directions of a layer side by side
        h = h.view(-1, self.dirs, B, h.size(-1)).permute(2, 0, 1, 3).reshape(B, -1)
        c = c.view(-1, self.dirs, B, c.size(-1)).permute(2, 0, 1, 3).reshape(B, -1)
        return out, self.to_vec(torch.cat([h, c], -1))
