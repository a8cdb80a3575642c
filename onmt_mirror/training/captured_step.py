"""Mirror's training step replayed from CUDA graphs, one per bucket of shapes.

At the paper's batch of 128 the eager step is bound by the host: launching a Mirror step's
thousands of kernels takes longer than running them (docs/performance.md). A CUDA graph
launches a recorded step at once. A step here is two graphs:

- forward and backward of one bucket key (training/buckets.py): MirrorModel's
  training_terms, MirrorLoss.total, the loss (scaled with fp16) divided by the
  normalization, its backward. Gradients accumulate, so -accum_count replays it per batch;
- the update, one for all keys: unscale, clip, Adam (fused, capturable, its learning rate
  a device tensor), the scaler's update, gradients zeroed (kept allocated: the graphs
  write into them).

Between the two the caller reads the batch's terms (the step's one sync), so the
non-finite guard stops or skips a batch before any weight changes, as in the eager step.
The first batch of a key runs the same code eagerly (on the stream that then captures it,
which warms up cuDNN, cuBLAS and Triton for its shapes there) and is then captured; the
captured graph has not run when capture ends, so no batch is counted twice. Capture is
"thread_local": OpenNMT-py's data loader pins memory in a thread of its own, and under
the default "global" mode that thread's CUDA calls broke a capture at random (seen on an
H200 after 150 steps). The graphs share one memory pool; their number is bounded, and a
new key is captured only while the card has room for it: past either, keys not yet
captured run the same step eagerly. With graphs=False (the CPU) the step runs eagerly
throughout.
"""
import torch
import torch.nn as nn

from onmt_mirror.training.buckets import WIDTHS, unflatten


class CapturedStep:
    MAX_GRAPHS = 512  # bucket keys captured; any further key runs eagerly (logged once)
    HEADROOM = 1.5  # free memory a capture needs, in multiples of the largest capture so far
    widths = WIDTHS  # the bucket ladder of c, x and y widths (training/buckets.py)

    def __init__(self, model, loss_total, optimizer, scaler, max_grad_norm, amp,
                 graphs=True, log=print):
        self.model, self.loss_total, self.optimizer = model, loss_total, optimizer
        self.scaler = scaler if amp else None
        self.max_grad_norm, self.amp, self.graphs, self.log = max_grad_norm, amp, graphs, log
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = self.params[0].device
        self.norm = torch.ones((), device=self.device)
        self.lr = torch.zeros((), device=self.device)
        self.forward_graphs, self.update_graph, self.pool = {}, None, None
        self.stream = torch.cuda.Stream(self.device) if graphs else None
        self.dropouts = [m for m in model.modules() if isinstance(m, (nn.Dropout, nn.LSTM))]
        self.dropout_setting = self.dropout_values()
        self.eager_from_now, self.largest_capture = "", 0
        if graphs:
            for group in optimizer.param_groups:
                group["capturable"] = True
                group["lr"] = self.lr

    # -- the step's two halves, as plain code -------------------------------------------
    def _forward_backward(self, batch):
        with torch.autocast(self.device.type, torch.float16, enabled=self.amp,
                            cache_enabled=False):
            terms, _ = self.model.training_terms(batch)
            loss = self.loss_total(terms) / self.norm
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return {k: v.detach() if torch.is_tensor(v) else v for k, v in terms.items()}

    def _update(self):
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm,
                                           foreach=self.device.type == "cuda")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)

    # -- what the trainer calls ---------------------------------------------------------
    def forward_backward(self, key, flat, normalization):
        """One batch, padded to its bucket `key` as the flat host buffer `flat` ->
        its training terms on the device (valid until the next call)."""
        self.norm.fill_(normalization)
        if not self.graphs:
            return self._forward_backward(unflatten(key, flat.to(self.device)))
        self.check_dropout()
        entry = self.forward_graphs.get(key)
        if entry is not None:
            graph, static, terms = entry
            static.copy_(flat, non_blocking=True)
            graph.replay()
            return terms
        why_not = self.why_not_capture()
        if why_not:
            self.run_eagerly_from_now(why_not)
            return self._forward_backward(unflatten(key, flat.to(self.device)))
        static = flat.to(self.device, copy=True)
        batch = unflatten(key, static)
        self.allocate_grads()
        terms = self.on_own_stream(self._forward_backward, batch)
        reserved = torch.cuda.memory_reserved(self.device)
        try:
            graph, static_terms = self.capture(self._forward_backward, batch)
        except torch.cuda.OutOfMemoryError:
            self.run_eagerly_from_now("out of GPU memory while capturing a %d-th graph"
                                      % (len(self.forward_graphs) + 1))
            return terms
        grew = torch.cuda.memory_reserved(self.device) - reserved
        self.largest_capture = max(self.largest_capture, grew)
        self.forward_graphs[key] = (graph, static, static_terms)
        if len(self.forward_graphs) & (len(self.forward_graphs) - 1) == 0:
            self.log("Mirror captured step: %d bucket graphs, GPU memory reserved %.1f GB "
                     "(peak allocated %.1f GB)" % (
                         len(self.forward_graphs), torch.cuda.memory_reserved(self.device)
                         / 2**30, torch.cuda.max_memory_allocated(self.device) / 2**30))
        return terms

    def update(self, learning_rate):
        """The optimizer step on the accumulated gradients, which it then zeroes."""
        if not self.graphs:
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate
            return self._update()
        self.lr.fill_(learning_rate)
        if self.update_graph is not None:
            return self.update_graph.replay()
        self.on_own_stream(self._update)
        self.update_graph, _ = self.capture(self._update)

    def discard(self):
        """No update for this step (a skipped non-finite batch): zero the gradients."""
        self.optimizer.zero_grad(set_to_none=False)

    # -- helpers -------------------------------------------------------------------------
    def why_not_capture(self):
        """Why a new bucket key runs eagerly instead of being captured ("" if it is
        captured): the graphs are bounded in number, and a capture needs memory of its
        own (its pool cannot reuse the eager step's cached blocks): as much as the
        largest capture so far, with HEADROOM to spare."""
        if self.eager_from_now:
            return self.eager_from_now
        if len(self.forward_graphs) >= self.MAX_GRAPHS:
            return "%d bucket graphs captured (the bound)" % self.MAX_GRAPHS
        free, total = torch.cuda.mem_get_info(self.device)
        reserved = torch.cuda.memory_reserved(self.device)
        cap = torch.cuda.get_per_process_memory_fraction(self.device) * total - reserved
        room = min(free, cap) + reserved - torch.cuda.memory_allocated(self.device)
        if room < self.HEADROOM * self.largest_capture:
            return ("%.1f GB of GPU memory free, a capture took up to %.1f GB"
                    % (room / 2**30, self.largest_capture / 2**30))
        return ""

    def run_eagerly_from_now(self, why):
        """Bucket keys not yet captured run the same step eagerly from now on; the
        graphs captured so far keep replaying. Said once."""
        if not self.eager_from_now:
            self.eager_from_now = why
            self.log("Mirror captured step: %s; keys not yet captured run eagerly" % why)

    def on_own_stream(self, fn, *args):
        """Run fn eagerly on the capture stream, as capture wants for a step's first run."""
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = fn(*args)
        torch.cuda.current_stream().wait_stream(self.stream)
        return out

    def capture(self, fn, *args):
        """(graph, fn's outputs): fn recorded on the capture stream into the shared pool."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream,
                              capture_error_mode="thread_local"):
            out = fn(*args)
        self.pool = graph.pool()
        return graph, out

    def allocate_grads(self):
        """Gradients exist before any capture: a graph must accumulate into them, not
        allocate its own in the shared pool."""
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def dropout_values(self):
        return [m.p if isinstance(m, nn.Dropout) else m.dropout for m in self.dropouts]

    def check_dropout(self):
        """A graph keeps the dropout rates it was captured with: -dropout_steps changes
        them, and then every bucket is captured afresh."""
        setting = self.dropout_values()
        if setting != self.dropout_setting:
            self.dropout_setting = setting
            self.forward_graphs, self.update_graph, self.pool = {}, None, None
            self.eager_from_now, self.largest_capture = "", 0
