"""Data parallelism on the CPU: two ranks over gloo, in processes started by
torch.multiprocessing spawn (onmt_mirror/distributed.py, registration/distributed.py, and
registration/checkpoints.py for each rank's generators).

`onmt_train -world_size 2` itself cannot run without CUDA in OpenNMT-py 3.5.1:
train_single.configure_process calls torch.cuda.set_device for every rank, build_model
puts the model on "cuda" whenever -gpu_ranks is given, and Trainer.train sums the
normalisation with all_gather_list, which allocates torch.cuda.ByteTensor (without
-gpu_ranks, -world_size 2 starts no process at all). So each rank here builds the
model, optimizer, Trainer and ModelSaver with OpenNMT-py's own functions, the model on
the CPU, and for the resume test runs the stock Trainer.train with all_gather_list
swapped for a gloo one. One spawn serves every test (each rank starts in ~3 s).
"""
import copy
import datetime
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import PAD, QUERY, make_batch

RANK_SENTENCES = (3, 4)  # per-rank batch sizes: unequal, so the ranks' generators part
ACCUM = 2  # -accum_count of the Trainer tests: the hooks must wait for the last pass
STEPS, CKPT = 6, 3
SPAWN_TIMEOUT_S = 240


def vocabs():
    import pyonmttok

    from onmt_mirror.opts import TURN_TOKEN

    words = ["<unk>", "<blank>", "<s>", "</s>", "｟mirror_query｠", TURN_TOKEN]
    words += ["w%d" % i for i in range(40 - len(words))]
    vocab = pyonmttok.build_vocab_from_tokens(words, maximum_size=0, minimum_frequency=0,
                                              special_tokens=[])
    assert vocab["<blank>"] == PAD and vocab["｟mirror_query｠"] == QUERY
    return {"src": vocab, "tgt": vocab, "data_task": "seq2seq"}


def train_opt(save_model, *args):
    """onmt_train's options for a tiny Mirror on ranks 0 and 1 (-gpu_ranks 0 1)."""
    from onmt.opts import train_opts
    from onmt.utils.parse import ArgumentParser

    parser = ArgumentParser()
    train_opts(parser)
    opt = parser.parse_args(
        ["-data", "{}", "-src_vocab", "unused", "-encoder_type", "mirror",
         "-word_vec_size", "12", "-hidden_size", "16", "-layers", "2",
         "-mirror_z_size", "6", "-input_feed", "0", "-dropout", "0.0",
         "-mirror_kl_anneal_steps", "0", "-optim", "adam", "-learning_rate", "0.01",
         "-max_grad_norm", "0", "-param_init", "0.3", "-seed", "7",
         "-world_size", "2", "-gpu_ranks", "0", "1", "-gpu_backend", "gloo",
         "-mirror_allreduce_bucket_mb", "0.02", "-save_model", save_model,
         "-report_every", "1000", "-valid_steps", "1000"] + list(args))
    opt.data = {}
    ArgumentParser.update_model_opts(opt)
    return opt


def cpu_model(opt, checkpoint=None):
    """OpenNMT-py's build_model, on the CPU (it picks "cuda" whenever -gpu_ranks is
    given)."""
    from onmt.model_builder import build_model

    cpu = copy.copy(opt)
    cpu.gpu_ranks = []
    return build_model(cpu, cpu, vocabs(), checkpoint, -1)


def build(opt, checkpoint=None):
    """Model, optimizer, saver and Trainer as train_single.main builds them."""
    import onmt.models
    import onmt.trainer
    from onmt.utils.optimizers import Optimizer

    rank = dist.get_rank() if dist.is_initialized() else 0
    model = cpu_model(opt, checkpoint)
    optim = Optimizer.from_opt(model, opt, checkpoint=checkpoint)
    saver = onmt.models.build_model_saver(opt, opt, model, vocabs(), optim, rank)
    return onmt.trainer.build_trainer(opt, rank, model, vocabs(), optim, model_saver=saver)


def batch_dict(seed, sentences):
    src, tgt, src_len = make_batch(seed=seed, batch=sentences)
    return {"src": src, "srclen": src_len, "tgt": tgt}


def concatenate(batches):
    """One batch holding every sentence of `batches` (padded to the longest)."""
    def pad(t, length):
        return torch.nn.functional.pad(t, (0, 0, 0, length - t.size(1)), value=PAD)

    out = {}
    for key in ("src", "tgt"):
        length = max(b[key].size(1) for b in batches)
        out[key] = torch.cat([pad(b[key], length) for b in batches])
    out["srclen"] = torch.cat([b["srclen"] for b in batches])
    return out


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def mirror_loss(model):
    from onmt_mirror.losses.mirror_loss import MirrorLoss

    cfg = model.cfg
    return MirrorLoss(cfg.decoders, cfg.backward_weight, cfg.pad_id, cfg.bow_weight,
                      "posterior")


def backward(model, batch, normalization):
    out, attns = model(batch["src"], batch["tgt"], batch["srclen"])
    (mirror_loss(model)(batch, out, attns)[0] / normalization).backward()


def one_process_grads(model, batch, normalization):
    """The reference: a plain backward of the whole batch in this process."""
    model.zero_grad(set_to_none=True)
    backward(model, batch, normalization)
    return grads(model)


def fixed_eps(mean, logvar):
    """z = mean + sigma * 0.5: the same 'noise' however the sentences are batched."""
    return mean.float() + 0.5 * torch.exp(0.5 * logvar.float())


def rank_batches(rank, n, first_seed):
    return [batch_dict(first_seed + 2 * k + rank, RANK_SENTENCES[rank]) for k in range(n)]


def tiny_model():
    torch.manual_seed(0)
    return cpu_model(train_opt("unused"))


def hooks_case(rank):
    """OverlappedAllReduce alone on a tiny Mirror: each rank's loss over the
    global sentence count, summed (rescale_denom 1), against one process on the
    concatenated batch."""
    from onmt_mirror.distributed import OverlappedAllReduce

    model = tiny_model()
    reference = copy.deepcopy(model)
    reducer = OverlappedAllReduce(model.parameters(), bucket_mb=0.02)
    batches = [batch_dict(1 + r, RANK_SENTENCES[r]) for r in (0, 1)]
    with reducer.step(1):
        backward(model, batches[rank], sum(RANK_SENTENCES))
        launched_in_backward = reducer.launched
        reducer.finish(1.0)
    return {"reduced": grads(model), "buckets": len(reducer.buckets),
            "launched_in_backward": launched_in_backward,
            "reference": one_process_grads(reference, concatenate(batches),
                                           sum(RANK_SENTENCES))}


def uneven_case(rank):
    """Rank 0 makes no backward (a batch skipped by -mirror_nonfinite skip), rank 1 does,
    and one parameter is used by no rank: finish() reduces what the hooks could not."""
    from onmt_mirror.distributed import OverlappedAllReduce

    model, unused = tiny_model(), torch.nn.Parameter(torch.zeros(3))
    batch = batch_dict(2, RANK_SENTENCES[1])
    rank1 = one_process_grads(copy.deepcopy(model), batch, RANK_SENTENCES[1])
    reducer = OverlappedAllReduce([*model.parameters(), unused], bucket_mb=0.02)
    with reducer.step(1):
        if rank == 1:
            backward(model, batch, RANK_SENTENCES[1])
        reducer.finish(2.0)
    return {"reduced": grads(model), "rank1_alone": rank1,
            "unused_has_grad": unused.grad is not None}


def counting_finish(reducer, launched):
    """reducer.finish that first notes how many buckets the hooks have launched."""
    finish = reducer.finish

    def counted(rescale_denom):
        launched.append(reducer.launched)
        finish(rescale_denom)
    return counted


def trainer_case(rank, tmp):
    """The stock Trainer._gradient_accumulation (-accum_count 2, -normalization sents
    summed over the ranks as Trainer.train does) with -mirror_overlap_allreduce off and
    on, from the same weights; and one process on all four batches."""
    import onmt.utils

    results = {}
    batches = rank_batches(rank, ACCUM, first_seed=20)
    everything = concatenate([b for r in (0, 1) for b in rank_batches(r, ACCUM, 20)])
    normalization = ACCUM * sum(RANK_SENTENCES)
    for mode in ("off", "on"):
        torch.manual_seed(0)
        trainer = build(train_opt(str(tmp / mode / "model"), "-accum_count", str(ACCUM),
                                  "-mirror_overlap_allreduce", mode))
        reducer = getattr(trainer, "mirror_allreduce", None)
        if reducer is not None:
            results["buckets"] = len(reducer.buckets)
            results["launched_before_finish"] = launched = []
            reducer.finish = counting_finish(reducer, launched)
        else:
            results["reference"] = one_process_grads(copy.deepcopy(trainer.model),
                                                     everything, normalization)
        trainer._gradient_accumulation(batches, normalization, onmt.utils.Statistics(),
                                       onmt.utils.Statistics())
        results[mode] = grads(trainer.model)
    return results


def gloo_all_gather_list(data, max_size=4096):
    """onmt.utils.distributed.all_gather_list without its torch.cuda.ByteTensor."""
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, data)
    return gathered


def train(opt, checkpoint=None):
    """Trainer.train (stock, with registration/checkpoints.py and distributed.py) of STEPS
    steps, a checkpoint every CKPT; the generators seeded as train_single.configure_process
    seeds them."""
    from onmt.utils.misc import set_random_seed

    set_random_seed(opt.seed, False)
    trainer = build(opt, checkpoint)
    data = [(b, 0) for b in rank_batches(dist.get_rank(), STEPS, first_seed=40)]
    trainer.train(iter(data), STEPS, save_checkpoint_steps=CKPT, valid_iter=None,
                  valid_steps=opt.valid_steps)


def resume_case(rank, tmp):
    """Two ranks, z sampled (the stock reparameterisation), 6 steps with checkpoints at
    3 and 6; then -train_from the step-3 checkpoint in a fresh Trainer to step 6."""
    import onmt.utils.distributed
    from onmt.models.model_saver import load_checkpoint

    onmt.utils.distributed.all_gather_list = gloo_all_gather_list
    train(train_opt(str(tmp / "whole" / "model")))
    dist.barrier()
    ckpt = str(tmp / "whole" / ("model_step_%d.pt" % CKPT))
    train(train_opt(str(tmp / "resumed" / "model"), "-train_from", ckpt),
          load_checkpoint(ckpt))
    dist.barrier()


def worker(rank, port, tmp):
    from onmt_mirror.models import mirror

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank,
                            world_size=2, timeout=datetime.timedelta(seconds=120))
    stock_reparameterize, mirror.reparameterize = mirror.reparameterize, fixed_eps
    results = {"hooks": hooks_case(rank), "uneven": uneven_case(rank),
               "trainer": trainer_case(rank, tmp)}
    mirror.reparameterize = stock_reparameterize
    resume_case(rank, tmp)
    torch.save(results, tmp / ("rank%d.pt" % rank))
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run `worker` on ranks 0 and 1; -> (the ranks' results, the folder)."""
    tmp = tmp_path_factory.mktemp("ranks")
    context = mp.start_processes(worker, args=(free_port(), tmp), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=SPAWN_TIMEOUT_S)
    try:
        while not context.join(timeout=1):
            assert datetime.datetime.now() < deadline, "the two ranks ran out of time"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(tmp / ("rank%d.pt" % r), weights_only=True) for r in (0, 1)], tmp


def assert_same_grads(a, b, tolerance):
    assert a.keys() == b.keys()
    for name in a:
        scale = b[name].abs().max().item()
        assert (a[name] - b[name]).abs().max().item() <= tolerance * max(scale, 1e-3), name


def test_hooks_reduce_to_the_gradient_of_the_concatenated_batch(two_ranks):
    (rank0, rank1), _ = two_ranks
    hooks = rank0["hooks"]
    assert hooks["buckets"] > 3  # 0.02 MB buckets on the 177 KB of gradients
    assert hooks["launched_in_backward"] == hooks["buckets"]  # all during the backward
    for name, g in hooks["reduced"].items():
        assert torch.equal(g, rank1["hooks"]["reduced"][name])  # the ranks agree exactly
    assert_same_grads(hooks["reduced"], hooks["reference"], 1e-5)


def test_a_rank_without_gradients_gets_the_others(two_ranks):
    (rank0, rank1), _ = two_ranks
    uneven = rank0["uneven"]
    for name, g in uneven["reduced"].items():
        assert torch.equal(g, rank1["uneven"]["reduced"][name])
        assert torch.equal(g, uneven["rank1_alone"][name] / 2)
    assert not uneven["unused_has_grad"] and not rank1["uneven"]["unused_has_grad"]


def test_overlapped_and_stock_paths_give_the_same_gradients(two_ranks):
    (rank0, rank1), _ = two_ranks
    trainer = rank0["trainer"]
    # -accum_count 2: every bucket launched by the hooks (in the last pass: launched
    # after the first, they would have reduced half sums and the paths would differ)
    assert trainer["launched_before_finish"] == [trainer["buckets"]]
    for name in trainer["off"]:
        assert torch.equal(trainer["on"][name], trainer["off"][name])
        assert torch.equal(trainer["on"][name], rank1["trainer"]["on"][name])
    # OpenNMT-py divides the sum over ranks by the global sentence count and again by
    # the number of ranks: half of one process's gradient on all the sentences
    half = {n: g / 2 for n, g in trainer["reference"].items()}
    assert_same_grads(trainer["on"], half, 1e-5)


def test_two_rank_train_from_resumes_exactly(two_ranks):
    _, tmp = two_ranks
    saved = torch.load(tmp / "whole" / ("model_step_%d.pt" % CKPT), weights_only=True)
    ranks = saved["optim"]["mirror_resume"]["rng_ranks"]
    # the ranks drew different amounts of noise: their generators had parted
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    whole = torch.load(tmp / "whole" / ("model_step_%d.pt" % STEPS), weights_only=True)
    resumed = torch.load(tmp / "resumed" / ("model_step_%d.pt" % STEPS), weights_only=True)
    for part in ("model", "generator"):
        assert whole[part].keys() == resumed[part].keys()
        for k in whole[part]:
            assert torch.equal(whole[part][k], resumed[part][k]), k
    a, b = whole["optim"]["optimizer"]["state"], resumed["optim"]["optimizer"]["state"]
    assert a.keys() == b.keys() and all(
        torch.equal(a[i][k], b[i][k]) for i in a for k in a[i])
    assert resumed["optim"]["training_step"] == STEPS + 1
    assert resumed["optim"]["mirror_resume"]["batches"] == STEPS


def test_overlap_needs_several_ranks_and_the_option(tmp_path):
    """Which Mirror Trainer gets the hooks (build_trainer on rank 0 of 2 needs no process
    group; a stock model's Trainer cannot be built on the CPU with -gpu_ranks)."""
    opt = train_opt(str(tmp_path / "model"))
    assert build(opt).mirror_allreduce.buckets
    off = train_opt(str(tmp_path / "model"), "-mirror_overlap_allreduce", "off")
    assert not hasattr(build(off), "mirror_allreduce")
    one = train_opt(str(tmp_path / "model"), "-world_size", "1", "-gpu_ranks", "0")
    assert not hasattr(build(one), "mirror_allreduce")


def test_bucket_size_must_be_positive(tmp_path):
    from onmt_mirror.errors import MirrorError

    with pytest.raises(MirrorError, match=r"-mirror_allreduce_bucket_mb 0.0: give a value "
                                          r"in \(0, inf\)"):
        train_opt(str(tmp_path / "model"), "-mirror_allreduce_bucket_mb", "0")
