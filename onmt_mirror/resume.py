"""What `onmt_train -train_from` needs, beyond weights and optimizer, to continue exactly.

OpenNMT-py 3.5.1 restores the weights, the optimizer state and the step, but restarts the
training data from the first batch and re-seeds the random generators: a resumed run
sees other batches and other noise (z samples, dropout) than an uninterrupted one.
registration/checkpoints.py stores the number of batches consumed and the generator states
below in the checkpoint's optimizer entry; on resume the data stream is replayed past those batches
(data workers are deterministic given -seed) and the generators are set back.
Everything is kept as tensors and plain numbers, so weights-only loading accepts it.
"""
import random

import numpy as np
import torch


def rng_state(cuda=True):
    """The states of every generator training may draw from, weights-only loadable;
    cuda=False: the host's generators only."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": torch.tensor(mt, dtype=torch.int64), "python_version": version,
             "python_gauss": gauss,
             "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
             "numpy_has_gauss": int(has_gauss), "numpy_cached": float(cached)}
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Set the generators back; the CUDA ones only when `state` has them. Setting a CUDA
    generator re-seeds it, and cuDNN then reallocates its LSTM dropout state at the next
    training call, freeing the buffer that captured training graphs read (an illegal
    memory access at their next replay): only a resume, before any capture, may."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"].tolist()),
                     state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32),
                         state["numpy_pos"], state["numpy_has_gauss"],
                         state["numpy_cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def replay(train_iter, optim, logger):
    """Yield train_iter's batches, counting them on `optim` (saved with it); after a
    resume, first skip the batches the checkpoint had consumed, then set the generators
    back (after the skip: with -num_workers 0 the data pipeline draws from them too)."""
    resume = getattr(optim, "resume_from", None)
    optim.batches_seen = 0
    batches = iter(train_iter)
    if resume:
        logger.info("Resuming: skipping the %d training batches the checkpoint has seen, "
                    "restoring its random generators", resume["batches"])
        for _ in range(resume["batches"]):
            next(batches)
        set_rng_state(resume["rng"])
        optim.batches_seen = resume["batches"]
    for batch in batches:
        optim.batches_seen += 1
        yield batch
