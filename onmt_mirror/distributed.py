"""Data-parallel training of Mirror: the gradient all-reduce overlapped with the backward,
and every rank's random generators in the checkpoint.

OpenNMT-py 3.5.1 all-reduces the gradients after the last backward of a step
(Trainer._gradient_accumulation -> onmt.utils.distributed.all_reduce_and_rescale_tensors:
copy into a 100 MB buffer, reduce, copy back, one chunk after the other). On 2xH200 that
was 5.5 ms a step for Mirror's 871 MB of fp32 gradients, none of it hidden behind the
backward. OverlappedAllReduce does what DistributedDataParallel does instead: buckets of
about 25 MB in reverse registration order (roughly the order in which the backward
produces the gradients), a hook on each parameter, and each bucket's asynchronous
all-reduce launched as soon as its gradients are final, while the backward goes on.

It keeps the stock arithmetic: the same sums of the same (loss-scaled, under fp16)
gradients, divided by the same `rescale_denom`, at the same point (before optim.step),
so both paths give the same numbers. Note that the stock Trainer divides twice: each
rank's loss by the global normalisation (sentences summed over ranks), then the summed
gradients by the number of ranks, so the gradient is 1/N of one process's on the
concatenated batch (Adam barely sees the scale; -max_grad_norm does).
"""
import contextlib

import torch
import torch.distributed as dist

from onmt_mirror import resume


def backward_passes(batches, trunc_size):
    """How many backward passes Trainer._gradient_accumulation makes for `batches` (one
    per batch, or one per -truncated_decoder chunk), if no loss is skipped."""
    passes = 0
    for batch in batches:
        target_size = batch["tgt"].size(1)
        passes += len(range(0, target_size - 1, trunc_size or target_size))
    return passes


class _Bucket:
    def __init__(self, params):
        self.params = params
        self.ones = params[0].new_ones(len(params))  # presence flags: every grad there
        self.ready = 0  # parameters whose gradient is final this step
        self.buffer = self.work = None


class OverlappedAllReduce:
    """Bucketed all-reduce of `params`' gradients, launched from the backward.

    Inside step(n), a parameter's gradient is final after its n-th accumulation (n =
    backward passes of the step, so with -accum_count or truncation only the last pass
    launches anything). Buckets are launched in index order on every rank, so the
    collectives match across ranks whatever the data. finish() launches what the hooks
    did not (a parameter some rank did not use, a skipped batch), waits, and writes
    sum / rescale_denom back. Each bucket carries a presence flag per parameter: a
    gradient no rank has stays None, as in the stock path (the optimizer skips it).
    """

    current = None  # the instance inside step(): where the stock all-reduce call goes

    def __init__(self, params, bucket_mb):
        params = [p for p in params if p.requires_grad]
        self.index = {id(p): i for i, p in enumerate(params)}
        self.bucket_of = [None] * len(params)
        self.buckets = []
        limit, size, members = bucket_mb * 2 ** 20, 0, []
        for p in reversed(params):
            nbytes = p.numel() * p.element_size()
            if members and (size + nbytes > limit or p.dtype != members[0].dtype):
                self._add_bucket(members)
                size, members = 0, []
            members.append(p)
            size += nbytes
        if members:
            self._add_bucket(members)
        self.expected = None  # backward passes of the current step; None outside one
        self.fired = [0] * len(params)
        self.launched = 0
        for p in params:
            p.register_post_accumulate_grad_hook(self._on_grad)

    def _add_bucket(self, members):
        bucket = _Bucket(members)
        for p in members:
            self.bucket_of[self.index[id(p)]] = bucket
        self.buckets.append(bucket)

    @contextlib.contextmanager
    def step(self, backward_passes):
        self.expected, self.fired, self.launched = backward_passes, [0] * len(self.fired), 0
        for bucket in self.buckets:
            bucket.ready, bucket.buffer, bucket.work = 0, None, None
        OverlappedAllReduce.current = self
        try:
            yield self
        finally:
            OverlappedAllReduce.current = None
            self.expected = None

    def _on_grad(self, param):
        if self.expected is None:
            return
        i = self.index[id(param)]
        self.fired[i] += 1
        if self.fired[i] == self.expected:
            self.bucket_of[i].ready += 1
            while (self.launched < len(self.buckets)
                   and self.buckets[self.launched].ready
                   == len(self.buckets[self.launched].params)):
                self._launch(self.buckets[self.launched])

    def _launch(self, bucket):
        grads = [p.grad for p in bucket.params]
        presence = bucket.ones if all(g is not None for g in grads) else torch.tensor(
            [g is not None for g in grads], dtype=bucket.ones.dtype,
            device=bucket.ones.device)
        bucket.buffer = torch.cat([g.reshape(-1) if g is not None else p.new_zeros(p.numel())
                                   for g, p in zip(grads, bucket.params)] + [presence])
        bucket.work = dist.all_reduce(bucket.buffer, async_op=True)
        self.launched += 1

    def finish(self, rescale_denom):
        """Launch the buckets the hooks left, wait for all, write sum / rescale_denom."""
        while self.launched < len(self.buckets):
            self._launch(self.buckets[self.launched])
        for bucket in self.buckets:
            bucket.work.wait()
            bucket.buffer.div_(rescale_denom)
            offset, flags = 0, bucket.buffer[-len(bucket.params):]
            for k, p in enumerate(bucket.params):
                reduced = bucket.buffer[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
                if p.grad is not None:
                    p.grad.copy_(reduced)
                elif flags[k] > 0:  # another rank had it (a host sync, only here)
                    p.grad = reduced.clone()
            bucket.buffer = bucket.work = None


def gather_rng_states():
    """Every rank's generator states (resume.rng_state), in rank order."""
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, resume.rng_state())
    return states
