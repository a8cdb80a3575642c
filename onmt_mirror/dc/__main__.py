"""python -m onmt_mirror.dc {fit,tune}: DC's side models, and α/β on the validation set.

    python -m onmt_mirror.dc fit --train-src train.src --train-tgt train.tgt \
        --model run/seq2seq_step_N.pt            # writes run/seq2seq_step_N.dc/
    python -m onmt_mirror.dc tune --model run/seq2seq_step_N.pt \
        --dc-model run/seq2seq_step_N.dc --src valid.src --tgt valid.tgt \
        --out run/dc_tune -- -beam_size 10 -max_length 40 -batch_size 64
"""
import argparse
import sys

from onmt_mirror.dialogue import SEPARATOR
from onmt_mirror.errors import MirrorError, run_command


def default_out(model):
    return (model[:-3] if model.endswith(".pt") else model) + ".dc"


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m onmt_mirror.dc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="fit the topic model and SIF embeddings")
    fit.add_argument("--train-src", required=True, help="prepared train.src (histories)")
    fit.add_argument("--train-tgt", required=True, help="prepared train.tgt (responses)")
    fit.add_argument("--model", help="forward checkpoint: its target embedding table gives "
                     "the word vectors; the output goes next to it (NAME.dc/)")
    fit.add_argument("--word-vectors", help="word2vec (text or binary) or GloVe text file "
                     "to use instead of the checkpoint's embeddings")
    fit.add_argument("--embedding-key", help="state-dict key of the embedding table "
                     "(default: found for stock seq2seq and Mirror checkpoints)")
    fit.add_argument("--out", help="output folder (default: the checkpoint path with .dc "
                     "instead of .pt)")
    fit.add_argument("--turn-sep", default=SEPARATOR, help="turn separator in --train-src "
                     "(-mirror_turn_sep; default %(default)s)")
    fit.add_argument("--topics", type=int, default=50, help="LDA topics")
    fit.add_argument("--max-df", type=float, default=0.1, help="words in more than this "
                     "share of the windows get no topic (stand-in for HMM-LDA's syntactic "
                     "classes)")
    fit.add_argument("--min-df", type=int, default=2, help="words in fewer windows get "
                     "no topic")
    fit.add_argument("--cased-topics", action="store_true", help="topic words keep case "
                     "(default: lower-cased)")
    fit.add_argument("--lda-iter", type=int, default=20, help="LDA passes over the data")
    fit.add_argument("--sif-a", type=float, default=1e-3, help="SIF's a in a/(a+p(w))")
    fit.add_argument("--pc-sentences", type=int, default=100000, help="responses sampled "
                     "to estimate the first principal component")
    fit.add_argument("--seed", type=int, default=1)

    from onmt_mirror.dc.tune import add_tune_arguments

    add_tune_arguments(sub.add_parser("tune", help="grid-search -dc_alpha/-dc_beta on the "
                                      "validation set through the stock onmt_translate"))
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:  # tune: everything after -- goes to onmt_translate
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    return run_command("onmt_mirror.dc", run, args, extra)


def run(args, extra):
    if args.command == "fit":
        from onmt_mirror.dc.side_models import fit

        if not args.out and not args.model:
            raise MirrorError("give --out when the vectors come from --word-vectors")
        fit(args.train_src, args.train_tgt, args.out or default_out(args.model),
            model=args.model, word_vectors=args.word_vectors,
            embedding_key=args.embedding_key, turn_sep=args.turn_sep,
            n_topics=args.topics, max_df=args.max_df, min_df=args.min_df,
            lowercase=not args.cased_topics, sif_a=args.sif_a,
            pc_sentences=args.pc_sentences, lda_max_iter=args.lda_iter, seed=args.seed)
    else:
        from onmt_mirror.dc.tune import tune

        tune(args, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
