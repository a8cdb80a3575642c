"""Where the real tokens of a padded (B, T) batch are: as a mask, or as a packing plan."""
import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence


def lengths_to_mask(lengths, max_len):
    """(B,) lengths -> (B, max_len) bool mask, True on real tokens."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class PackPlan:
    """How rows of lengths `lengths` (host) sit in a (B, T) batch, as cuDNN reads them.

    PyTorch's pack_padded_sequence / pad_packed_sequence copy one time step at a time
    (forward and backward): with six LSTM calls a Mirror step issued ~2,000 small copies and
    was bound by the CPU. Here one index built on the host, copied asynchronously, packs
    with one gather and unpacks with one scatter. `index` holds the flat (b * T + t)
    positions of the real tokens in packed (time-major, longest-first) order; the same
    order serves the output layers and their gold tokens, so padding never reaches them.
    """

    def __init__(self, lengths, width, device):
        # numpy on the host: torch's boolean indexing runs multi-threaded here and its
        # idle threads then spin (twice the CPU time of this plan on 2 cores)
        n = lengths.cpu().long().numpy()
        order = np.argsort(-n, kind="stable")
        steps = np.arange(n.max())
        real = steps[:, None] < n[order][None, :]  # (T_max, B), time-major
        self.batch_sizes = torch.from_numpy(real.sum(1).astype(np.int64))
        index = (order[None, :] * width + steps[:, None])[real]
        B = n.size
        host = torch.from_numpy(np.concatenate([index, order, np.argsort(order)]))
        if device.type == "cuda":
            host = host.pin_memory()
        host = host.to(device, non_blocking=True)
        self.index, self.sorted_indices, self.unsorted_indices = host.split(
            [index.size, B, B])
        self.shape = (B, width)

    def pack(self, padded):
        """(B, T, D) -> PackedSequence for nn.LSTM (which also reorders its (h0, c0))."""
        data = padded.reshape(-1, padded.size(-1)).index_select(0, self.index)
        return PackedSequence(data, self.batch_sizes, self.sorted_indices,
                              self.unsorted_indices)

    def unpack(self, data):
        """Packed (N, D) -> (B, T, D), zeros at padding."""
        B, T = self.shape
        out = data.new_zeros(B * T, data.size(-1)).index_copy(0, self.index, data)
        return out.view(B, T, -1)

    def select(self, padded):
        """(B, T, ...) -> (N, ...) at the real positions, in packed order."""
        return select_rows(padded, self.index)


def select_rows(padded, index):
    """(B, T, ...) -> (N, ...): the rows of the flattened (B * T) positions in `index`."""
    return padded.reshape(-1, *padded.shape[2:]).index_select(0, index)
