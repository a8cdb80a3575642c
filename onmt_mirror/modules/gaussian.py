"""Gaussian latent algebra: sampling, KL, densities and the MI estimate of q(z|.)."""
import math

import torch

from onmt_mirror.errors import MirrorError


def reparameterize(mean, logvar, generator=None):
    """z = mean + sigma * eps, eps ~ N(0, I) (the reference drew eps from U[0, 1)).
    Computed in fp32 also under mixed precision; eps from `generator` when given."""
    mean, logvar = mean.float(), logvar.float()
    eps = torch.randn_like(mean) if generator is None else torch.randn(
        mean.shape, generator=generator, device=mean.device)
    return mean + torch.exp(0.5 * logvar) * eps


def gaussian_kl_dims(mu_q, logvar_q, mu_p, logvar_p):
    """Analytic KL(N(mu_q, var_q) || N(mu_p, var_p)) per z dimension: (B, Z)."""
    return 0.5 * (logvar_p - logvar_q
                  + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1)


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p):
    """The KL summed over z dims: (B, Z) -> (B,)."""
    return gaussian_kl_dims(mu_q, logvar_q, mu_p, logvar_p).sum(-1)


def free_bits_kl(kl_dims, target, mode):
    """KL thresholding: what the loss sees of a batch's KL (B, Z) when KL under `target`
    nats costs nothing. "sentence": sum_i max(KL_i, target), each example's own target
    (DialogVED); "dim": B * sum_d max(mean_i KL_id, target), the batch-mean KL of each
    dimension (Kingma et al. 2016). Below the target the gradient is zero."""
    if mode == "sentence":
        return kl_dims.sum(-1).clamp(min=target).sum()
    if mode == "dim":
        return kl_dims.size(0) * kl_dims.mean(0).clamp(min=target).sum()
    raise MirrorError("-mirror_free_bits_mode %r: sentence or dim" % mode)


def gaussian_log_density(z, mean, logvar):
    """log N(z; mean, diag(exp(logvar))) summed over the last axis."""
    return -0.5 * (math.log(2 * math.pi) * z.size(-1)
                   + (logvar + (z - mean) ** 2 / logvar.exp()).sum(-1))


def mutual_information(mean, logvar, generator=None):
    """Estimate of I(z; (c, x, y)) under q over one batch (Hoffman & Johnson 2016, as
    He et al. 2019 compute it): E[log q(z|.)] - E[log q(z)], the aggregate posterior
    q(z) taken as the mixture of the batch's posteriors, so the estimate is at most
    log(batch size)."""
    B = mean.size(0)
    z = reparameterize(mean, logvar, generator)
    log_q_own = gaussian_log_density(z, mean, logvar)
    log_q_all = gaussian_log_density(z[:, None, :], mean[None], logvar[None])  # (B, B)
    log_q_agg = torch.logsumexp(log_q_all, 1) - math.log(B)
    return (log_q_own - log_q_agg).mean()
