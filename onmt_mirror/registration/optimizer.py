"""Optimizer: `-optim adam` for Mirror on CUDA is torch's fused Adam (same update rule and
state dict, so checkpoints resume either way); stock models keep the stock optimizer."""
import onmt.utils.optimizers as optimizers
import torch

from onmt_mirror.models.mirror import MirrorModel
from onmt_mirror.registration.patching import original, replaces


@replaces(optimizers, "build_torch_optimizer", why="`Optimizer.from_opt` reaches it by "
          "module global; the stock `-optim adam` is torch's multi-tensor Adam, slower for "
          "Mirror than the fused kernel and with a host sync in the fp16 GradScaler")
def build_torch_optimizer(model, opt):
    params = [p for p in model.parameters() if p.requires_grad]
    if (opt.optim == "adam" and isinstance(model, MirrorModel) and params
            and all(p.is_cuda for p in params)):
        return torch.optim.Adam(params, lr=opt.learning_rate,
                                betas=(opt.adam_beta1, opt.adam_beta2), eps=1e-8,
                                fused=True)
    return original(optimizers, "build_torch_optimizer")(model, opt)
