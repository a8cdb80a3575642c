"""nn.LSTM with a one-kernel fp16 cast of its weights under CUDA autocast."""
import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence


def _whole_storage(t):
    """A 1-D tensor over all of t's storage (element offsets as in t's own views)."""
    return t.new_empty(0).set_(t.untyped_storage())


class _CastFlatWeights(torch.autograd.Function):
    """fp32 LSTM weights that are views of one buffer -> the same views of ONE fp16 copy.

    Backward casts the gradient back the same way: cuDNN returns the weight gradients as
    views of one buffer laid out like the weights, so that is one kernel too."""

    @staticmethod
    def forward(ctx, *weights):
        ctx.set_materialize_grads(False)
        ctx.layout = [(w.size(), w.stride(), w.storage_offset()) for w in weights]
        half = _whole_storage(weights[0]).to(torch.half)
        return tuple(half.as_strided(*layout) for layout in ctx.layout)

    @staticmethod
    def backward(ctx, *grads):
        if all(g is not None for g in grads) and len({
                g.untyped_storage().data_ptr() for g in grads}) == 1 and [
                (g.size(), g.stride(), g.storage_offset()) for g in grads] == ctx.layout:
            flat = _whole_storage(grads[0]).float()
            return tuple(flat.as_strided(*layout) for layout in ctx.layout)
        return tuple(None if g is None else g.float() for g in grads)


class LSTM(nn.LSTM):
    """nn.LSTM whose fp16 weights, under CUDA autocast, are cast in one kernel.

    Autocast casts an LSTM's fp32 weights for cuDNN one tensor at a time into a fresh flat
    buffer, each copy with its own autograd node, forward and backward: in a profile of
    Mirror at batch 512 that doubled the host time inside the LSTM calls. On CUDA
    nn.LSTM keeps its weights as views of one cuDNN-ordered buffer, so casting that buffer
    whole gives fp16 views that cuDNN takes as they are. Same parameters, same state dict;
    anywhere else (CPU, fp32, weights not flat) it is nn.LSTM."""

    cast_flat = True  # the speed benchmark turns it off to measure what it buys

    def flat_half_weights(self):
        self._update_flat_weights()  # as nn.LSTM.forward does, before reading them
        w = self._flat_weights
        if not (self.cast_flat and w[0].is_cuda and torch.is_autocast_enabled("cuda")
                and torch.backends.cudnn.enabled and self.proj_size == 0):
            return None
        storage = w[0].untyped_storage().data_ptr()
        if any(t.dtype != torch.float32 or t.untyped_storage().data_ptr() != storage
               for t in w):
            return None
        return _CastFlatWeights.apply(*w)

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        weights = self.flat_half_weights()
        if weights is None or (not packed and input.dim() != 3):
            return super().forward(input, hx)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            rows = int(batch_sizes[0])
        else:
            data, batch_sizes, sorted_indices, unsorted_indices = input, None, None, None
            rows = input.size(0 if self.batch_first else 1)
        if hx is None:
            zeros = data.new_zeros((2 if self.bidirectional else 1) * self.num_layers,
                                   rows, self.hidden_size)
            hx = (zeros, zeros)
        else:
            hx = self.permute_hidden(hx, sorted_indices)
        flags = (self.bias, self.num_layers, self.dropout, self.training,
                 self.bidirectional)
        if packed:
            out, h, c = torch._VF.lstm(data, batch_sizes, hx, weights, *flags)
            out = PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices)
        else:
            out, h, c = torch._VF.lstm(data, hx, weights, *flags, self.batch_first)
        return out, self.permute_hidden((h, c), unsorted_indices)
