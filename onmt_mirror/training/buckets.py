"""A batch of triples padded to a few fixed shapes, so that a CUDA graph per shape can
replay the training step.

Each of c, x and y is padded to the next width of WIDTHS, and the gold tokens of each
side (which the output layers read: the largest GEMMs of the step) are gathered through
an index padded to the next step of a geometric ladder (ratio CAPACITY_RATIO, multiples of
CAPACITY_QUANTUM), whose extra entries weigh 0. The batch is built on the host as one flat
int64 buffer: one copy to the device per batch, into the graph's static buffer.
"""
import math

import torch
import torch.nn.functional as F

from onmt_mirror.modules.padding import lengths_to_mask
from onmt_mirror.modules.src_field import DialogueBatch

# by 4 to 48, then coarser, then multiples of 32 (the recipes cut c at 100 tokens, x and y
# at 45): an LSTM's time is its time steps, so a fine ladder pays for its extra bucket
# keys (docs/performance.md measures it against (8, 16, 24, 32, 48, 64, 100, 128))
WIDTHS = tuple(range(4, 49, 4)) + (56, 64, 80, 100, 128)
CAPACITY_RATIO = 1.5  # at most a third of the output rows pad
CAPACITY_QUANTUM = 64


def width(n, widths=WIDTHS):
    """The bucket width holding n tokens."""
    return next((w for w in widths if w >= n), -(-n // 32) * 32)


def capacity(n):
    """The smallest step of the capacity ladder holding n rows."""
    cap = CAPACITY_QUANTUM
    while cap < n:
        cap = int(math.ceil(cap * CAPACITY_RATIO / CAPACITY_QUANTUM)) * CAPACITY_QUANTUM
    return cap


FIELDS = DialogueBatch._fields


def shapes(key):
    """The shape of every DialogueBatch field of a bucket key."""
    B, Tc, Tx, Ty, cap_x, cap_y = key
    return dict(c=(B, Tc), c_len=(B,), x=(B, Tx), x_len=(B,), y=(B, Ty), y_len=(B,),
                x_in=(B, Tx + 1), x_gold=(B, Tx + 1), y_in=(B, Ty + 1),
                y_gold=(B, Ty + 1), index_x=(cap_x,), index_y=(cap_y,), n_index=(2,))


def bucket(src, tgt, src_len, cfg, widths=WIDTHS):
    """An OpenNMT-py batch's src (B, Ls), tgt (B, Lt) and src_len (B,), on the host ->
    (key, flat int64 buffer, counts): the DialogueBatch padded to its bucket, the bucket
    key (B, Tc, Tx, Ty, cap_x, cap_y), and the host numbers the statistics need. The same
    split as split_src and MirrorModel.forward (an empty field reads one pad token).
    widths: the ladder of c, x and y widths (a finer one pads less, for more graphs)."""
    pad = cfg.pad_id
    B = src.size(0)
    is_query = src == cfg.query_id
    q_pos = is_query.int().argmax(1)
    c_len = q_pos.clamp(min=1)
    x_len = (src_len - q_pos - 1).clamp(min=1)
    y = tgt[:, 1:].masked_fill(tgt[:, 1:].eq(cfg.eos_id), pad)
    y_len = y.ne(pad).sum(1).clamp(min=1)
    Tc, Tx, Ty = (width(int(n.max()), widths) for n in (c_len, x_len, y_len))

    def fit(t, w):
        return F.pad(t, (0, w - t.size(1)), value=pad) if t.size(1) < w else t[:, :w]

    c = fit(src, Tc).masked_fill(~lengths_to_mask(c_len, Tc), pad)
    idx = (q_pos[:, None] + 1 + torch.arange(Tx)[None, :]).clamp(max=src.size(1) - 1)
    x = src.gather(1, idx).masked_fill(~lengths_to_mask(x_len, Tx), pad)
    x_in = torch.cat([torch.full((B, 1), cfg.bos_id), x], 1)
    x_gold = torch.cat([x, torch.full((B, 1), pad)], 1).scatter(1, x_len[:, None],
                                                                cfg.eos_id)
    fields = dict(c=c, c_len=c_len, x=x, x_len=x_len, y=fit(y, Ty), y_len=y_len,
                  x_in=x_in, x_gold=x_gold, y_in=fit(tgt[:, :-1], Ty + 1),
                  y_gold=fit(tgt[:, 1:], Ty + 1))
    n_gold = {"x": x_len + 1, "y": y_len + 1}
    caps = []
    for side, T in (("x", Tx), ("y", Ty)):
        real = lengths_to_mask(n_gold[side], T + 1).reshape(-1).nonzero()[:, 0]
        caps.append(capacity(real.numel()))
        fields["index_" + side] = F.pad(real, (0, caps[-1] - real.numel()))
    fields["n_index"] = torch.stack([n_gold["x"].sum(), n_gold["y"].sum()])
    key = (B, Tc, Tx, Ty, *caps)
    flat = torch.cat([fields[k].reshape(-1).long() for k in FIELDS])
    counts = {"n_sents": float(B), "n_x": float(fields["n_index"][0]),
              "n_y": float(fields["n_index"][1]), "n_src_words": int(src_len.sum())}
    return key, flat, counts


def bucket_batch(batch, cfg, widths=WIDTHS):
    """bucket() of an OpenNMT-py batch dict (src and tgt (B, L, 1), srclen), wherever its
    tensors are."""
    return bucket(batch["src"][:, :, 0].cpu(), batch["tgt"][:, :, 0].cpu(),
                  batch["srclen"].cpu(), cfg, widths)


def unflatten(key, flat):
    """The flat buffer (wherever it is) as a DialogueBatch of views (bucket's inverse)."""
    s = shapes(key)
    sizes = [math.prod(s[k]) for k in FIELDS]
    return DialogueBatch(*(v.view(s[k]) for k, v in zip(FIELDS, flat.split(sizes))))
