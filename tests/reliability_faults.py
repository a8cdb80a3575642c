"""Numerical faults injected into a real onmt_train run.

Used as `python -c "import reliability_faults as f; f.FAULT(BATCHES); f.train()" ARGS`:
the stock entry point onmt.bin.train.main then runs with MirrorModel patched, in this
process only (the data workers never run the model).
"""
import onmt  # noqa: F401  (registers the plugin first: its modules import each other)
import torch

from onmt_mirror.models.mirror import MirrorModel

_forward = MirrorModel.forward


def nan_term(term, batches):
    """Make one summed loss term NaN at the given training batches (1-based)."""
    def forward(self, *args, **kwargs):
        out, attns = _forward(self, *args, **kwargs)
        if self.training and int(self.kl_annealing.step) in batches:
            attns["mirror"][term] = attns["mirror"][term] * float("nan")
        return out, attns

    MirrorModel.forward = forward


def nan_parameter(batches):
    """Set one weight of the posterior network to NaN before the given batches."""
    def forward(self, *args, **kwargs):
        if self.training and int(self.kl_annealing.step) + 1 in batches:
            with torch.no_grad():
                self.posterior_net.mean.weight[0, 0] = float("nan")
        return _forward(self, *args, **kwargs)

    MirrorModel.forward = forward


def train():
    from onmt.bin.train import main

    main()
