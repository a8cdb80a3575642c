"""Mirror's src field back into context c and query x, on the device, and the batch of
triples the training terms read."""
from typing import NamedTuple, Optional

import torch

from onmt_mirror.errors import MirrorError
from onmt_mirror.modules.padding import lengths_to_mask


def split_src(src, src_len, query_id, pad_id, extra_lengths=()):
    """The src field is `c ｟mirror_query｠ x` (see the mirror_triple transform).

    src: (B, L) token ids -> c (B, Lc), c_len (B,), x (B, Lx), x_len (B,), and the host
    copies of [c_len, x_len, *extra_lengths] as one (k, B) CPU tensor: packing needs
    lengths on the host, and fetching them all at once is the step's single sync.
    """
    is_query = src == query_id
    q_pos = is_query.int().argmax(1)
    c_len = q_pos.clamp(min=1)  # an empty context reads the marker itself
    x_len = (src_len - q_pos - 1).clamp(min=1)
    host = torch.stack([is_query.any(1).long(), c_len, x_len, *extra_lengths]).cpu()
    if not bool(host[0].all()):
        raise MirrorError("a src line has no query marker: Mirror needs the "
                          "'mirror_triple' transform on every corpus (and on -src)")
    c = src[:, : int(host[1].max())]
    c = c.masked_fill(~lengths_to_mask(c_len, c.size(1)), pad_id)
    lx = int(host[2].max())
    idx = (q_pos[:, None] + 1 + torch.arange(lx, device=src.device)[None, :])
    x = src.gather(1, idx.clamp(max=src.size(1) - 1))
    x = x.masked_fill(~lengths_to_mask(x_len, lx), pad_id)
    return c, c_len, x, x_len, host[1:]


class DialogueBatch(NamedTuple):
    """A batch of triples as Mirror's training terms read it.

    Utterances without <s>/</s>, padded (c, x, y, each with its (B,) lengths); the
    decoders' teacher-forced inputs and gold (x_in = <s> x, x_gold = x </s>, y likewise);
    and where the gold tokens are: index_x / index_y hold flat positions in x_gold /
    y_gold of the real gold tokens, which are all the output layers see. In a captured
    step the indices are padded to a fixed capacity and n_index (2,) counts their real
    entries (the rest weigh 0); None means every entry is real."""

    c: torch.Tensor
    c_len: torch.Tensor
    x: torch.Tensor
    x_len: torch.Tensor
    y: torch.Tensor
    y_len: torch.Tensor
    x_in: torch.Tensor
    x_gold: torch.Tensor
    y_in: torch.Tensor
    y_gold: torch.Tensor
    index_x: torch.Tensor
    index_y: torch.Tensor
    n_index: Optional[torch.Tensor] = None

    def gold_weight(self, side):
        """(N,) 1.0 on real entries of index_<side>, 0.0 on capacity padding (or None)."""
        if self.n_index is None:
            return None
        index = getattr(self, "index_" + side)
        n = self.n_index[0 if side == "x" else 1]
        return (torch.arange(index.numel(), device=index.device) < n).float()
