"""Mirror's src field back into context c and query x, on the device."""
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
