"""DC's side models (Baheti et al. 2018, Sec. 3): a topic model and SIF sentence embeddings.

Both are reduced to per-word vectors, so that a text's representation is a sum over its
tokens and a growing hypothesis can be scored incrementally (see `scorer.py`):

- topic: a text's topic distribution is the normalised sum of p(k | w) over its tokens,
  p(k | w) ∝ p(w | k) p(k) under an LDA fitted on the training windows (scikit-learn's
  batch variational LatentDirichletAllocation). The original used an HMM-LDA syntax-topic
  model (Griffiths et al. 2005), where function words fall into syntactic classes and
  carry no topic; here words in more than `max_df` of the documents are dropped from the
  topic vocabulary instead, and carry no topic either.
- semantic: SIF (Arora et al. 2017): the a / (a + p(w)) weighted average of word vectors,
  then the projection on the first principal component u of the training sentences'
  weighted averages removed. Both steps are linear, so a text's SIF direction is the sum
  of (I - u uᵀ) · a/(a + p(w)) · v_w over its tokens (cosine ignores the 1/|s| factor).

`fit` writes one folder: settings.json (every setting, the inputs, counts) and
side_models.npz (words and arrays; no pickles).
"""
import json
import os
import time
from collections import Counter

import numpy as np

from onmt_mirror.dialogue import SEPARATOR, read_lines, split_line
from onmt_mirror.errors import MirrorError

SETTINGS = "settings.json"
ARRAYS = "side_models.npz"
# checkpoint tensors holding the target-side embedding table, in order of preference:
# stock seq2seq decoder, Mirror's Dec1 (own table), Mirror with shared tables
EMBEDDING_KEYS = ("decoder.embeddings.make_embedding.emb_luts.0.weight",
                  "emb_y_cxz.weight", "embedding.weight")


def read_windows(src_path, tgt_path, turn_sep):
    """[(turns of the history, response)] from the prepared src/tgt files."""
    src, tgt = list(read_lines(src_path)), list(read_lines(tgt_path))
    if len(src) != len(tgt):
        raise MirrorError("%s has %d lines, %s has %d" % (src_path, len(src), tgt_path,
                                                          len(tgt)))
    return [([u for u in split_line(s, turn_sep) if u], t.split())
            for s, t in zip(src, tgt)]


def fit_topics(windows, n_topics, max_df, min_df, lowercase, seed, max_iter):
    """(words, p(k|w) as [W, K]) from an LDA over one document per window (c, x and y)."""
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.feature_extraction.text import CountVectorizer

    docs = [" ".join(tok for turn in turns + [resp] for tok in turn)
            for turns, resp in windows]
    vectorizer = CountVectorizer(tokenizer=str.split, token_pattern=None,
                                 lowercase=lowercase, max_df=max_df, min_df=min_df)
    counts = vectorizer.fit_transform(docs)
    lda = LatentDirichletAllocation(n_components=n_topics, learning_method="batch",
                                    max_iter=max_iter, random_state=seed)
    doc_topics = lda.fit_transform(counts)
    p_w_given_k = lda.components_ / lda.components_.sum(1, keepdims=True)  # [K, W]
    p_k = doc_topics.mean(0)  # corpus topic proportions
    joint = p_w_given_k.T * p_k[None, :]  # [W, K]
    p_k_given_w = joint / joint.sum(1, keepdims=True)
    words = vectorizer.get_feature_names_out().tolist()
    return words, p_k_given_w.astype(np.float32), float(lda.perplexity(counts))


def unigram_probs(windows):
    """Counter of tokens over every utterance of every window, and the total."""
    counts = Counter(tok for turns, resp in windows for turn in turns + [resp]
                     for tok in turn)
    return counts, sum(counts.values())


def checkpoint_vectors(path, key=None):
    """(tokens, [V, D] float32) from the forward checkpoint's target embedding table."""
    import onmt  # noqa: F401  (the plugin's registration allows the checkpoint's options)

    from onmt_mirror.checkpoint_io import safe_load

    ckpt = safe_load(path, map_location="cpu")
    state = ckpt["model"]
    keys = [key] if key else [k for k in EMBEDDING_KEYS if k in state]
    if not keys or keys[0] not in state:
        raise MirrorError("%s: no embedding table %s; name one with --embedding-key (has: "
                          "%s)" % (path, key or " / ".join(EMBEDDING_KEYS),
                                   ", ".join(k for k in state if "emb" in k)[:300]))
    table = state[keys[0]].float().numpy()
    tokens = list(ckpt["vocab"]["tgt"])
    if table.shape[0] != len(tokens):
        raise MirrorError("%s: %s has %d rows, the target vocabulary %d tokens"
                          % (path, keys[0], table.shape[0], len(tokens)))
    return tokens, table, keys[0]


def file_vectors(path, keep):
    from onmt_mirror.evaluate.word_vectors import load_file

    vectors = load_file(path, keep=keep)
    words = sorted(keep)
    rows = [vectors.lookup(w) for w in words]
    kept = [(w, r) for w, r in zip(words, rows) if r is not None]
    if not kept:
        raise MirrorError("%s: none of the training words has a vector" % path)
    return [w for w, _ in kept], np.stack([r for _, r in kept]).astype(np.float32), \
        vectors.description


def fit_sif(windows, words, table, a, pc_sentences, seed):
    """SIF parts for the words that have a vector: weights a/(a+p(w)) and the first PC."""
    counts, total = unigram_probs(windows)
    keep = [i for i, w in enumerate(words) if w in counts]
    words = [words[i] for i in keep]
    table = table[keep]
    p_w = np.array([counts[w] / total for w in words], dtype=np.float64)
    weights = (a / (a + p_w)).astype(np.float32)
    index = {w: i for i, w in enumerate(words)}
    sentences = [resp for _, resp in windows]  # each response once
    rng = np.random.default_rng(seed)
    if len(sentences) > pc_sentences:
        sentences = [sentences[i] for i in rng.choice(len(sentences), pc_sentences,
                                                      replace=False)]
    rows = []
    for sent in sentences:
        ids = [index[t] for t in sent if t in index]
        if ids:
            rows.append((weights[ids, None] * table[ids]).mean(0))
    emb = np.stack(rows).astype(np.float64)
    # first right singular vector of the (uncentred) sentence matrix, as Arora et al.
    _, _, vt = np.linalg.svd(emb, full_matrices=False)
    pc = vt[0].astype(np.float32)
    explained = float(((emb @ vt[0]) ** 2).sum() / (emb ** 2).sum())
    return words, table, weights, pc, len(rows), explained


def fit(train_src, train_tgt, out, model=None, word_vectors=None, embedding_key=None,
        turn_sep=SEPARATOR, n_topics=50, max_df=0.1, min_df=2, lowercase=True, sif_a=1e-3,
        pc_sentences=100000, lda_max_iter=20, seed=1, log=print):
    if not model and not word_vectors:
        raise MirrorError("give --model (its embedding table is used) or --word-vectors")
    start = time.time()
    windows = read_windows(train_src, train_tgt, turn_sep)
    log("dc fit: %d training windows from %s, %s" % (len(windows), train_src, train_tgt))
    t_words, p_k_given_w, perplexity = fit_topics(windows, n_topics, max_df, min_df,
                                                  lowercase, seed, lda_max_iter)
    log("dc fit: LDA with %d topics over %d words (perplexity %.1f)"
        % (n_topics, len(t_words), perplexity))
    if word_vectors:
        keep = {t for turns, resp in windows for u in turns + [resp] for t in u}
        s_words, table, vec_desc = file_vectors(word_vectors, keep)
        vec_key = None
    else:
        s_words, table, vec_key = checkpoint_vectors(model, embedding_key)
        vec_desc = "embedding table %s of %s (dim %d)" % (vec_key, model, table.shape[1])
    s_words, table, weights, pc, n_pc, explained = fit_sif(windows, s_words, table, sif_a,
                                                           pc_sentences, seed)
    log("dc fit: SIF over %d words with vectors (%s); first PC from %d responses "
        "(%.1f%% of the energy)" % (len(s_words), vec_desc, n_pc, 100 * explained))
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, ARRAYS), topic_words=np.array(t_words, dtype=str),
             p_topic_given_word=p_k_given_w, sif_words=np.array(s_words, dtype=str),
             sif_vectors=table, sif_weights=weights, sif_pc=pc)
    settings = {
        "paper": "Baheti et al. 2018, Generating More Interesting Responses in Neural "
                 "Conversation Models with Distributional Constraints",
        "train_src": os.path.abspath(train_src), "train_tgt": os.path.abspath(train_tgt),
        "windows": len(windows), "turn_sep": turn_sep,
        "topic_model": "sklearn LatentDirichletAllocation (batch variational Bayes); the "
                       "original used HMM-LDA",
        "topic_documents": "one per window: context turns, query and response",
        "n_topics": n_topics, "max_df": max_df, "min_df": min_df, "lowercase": lowercase,
        "lda_max_iter": lda_max_iter, "lda_perplexity": perplexity,
        "topic_words": len(t_words), "seed": seed,
        "word_vectors": os.path.abspath(word_vectors) if word_vectors else None,
        "model": os.path.abspath(model) if model else None, "embedding_key": vec_key,
        "vectors": vec_desc, "sif_a": sif_a, "sif_words": len(s_words),
        "sif_pc_sentences": n_pc, "sif_pc_energy": explained,
        "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(out, SETTINGS), "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    log("dc fit: wrote %s (%.1f s)" % (out, time.time() - start))
    return settings


class SideModels:
    """What decoding needs: per-word topic posteriors and SIF word directions, by word."""

    def __init__(self, settings, topic_words, p_topic_given_word, sif_words, sif_dirs):
        self.settings = settings
        self.topic_index = {w: i for i, w in enumerate(topic_words)}
        self.p_topic_given_word = p_topic_given_word  # [W_t, K]
        self.sif_index = {w: i for i, w in enumerate(sif_words)}
        self.sif_dirs = sif_dirs  # [W_s, D]: (I - u uᵀ) a/(a+p(w)) v_w

    @classmethod
    def load(cls, folder):
        try:
            with open(os.path.join(folder, SETTINGS), encoding="utf-8") as f:
                settings = json.load(f)
            arrays = np.load(os.path.join(folder, ARRAYS), allow_pickle=False)
        except OSError as exc:
            raise MirrorError("-dc_model %s: not a folder written by `python -m "
                              "onmt_mirror.dc fit` (%s)" % (folder, exc.strerror or exc))
        vec, pc = arrays["sif_vectors"], arrays["sif_pc"]
        weighted = vec * arrays["sif_weights"][:, None]
        dirs = weighted - (weighted @ pc)[:, None] * pc[None, :]
        return cls(settings, arrays["topic_words"].tolist(), arrays["p_topic_given_word"],
                   arrays["sif_words"].tolist(), dirs.astype(np.float32))

    def vocab_tables(self, tokens):
        """[V, K] topic and [V, D] SIF rows for a vocabulary (zeros for unknown words)."""
        lower = self.settings.get("lowercase", True)
        topic = np.zeros((len(tokens), self.p_topic_given_word.shape[1]), np.float32)
        sif = np.zeros((len(tokens), self.sif_dirs.shape[1]), np.float32)
        for i, tok in enumerate(tokens):
            t = self.topic_index.get(tok.lower() if lower else tok)
            if t is not None:
                topic[i] = self.p_topic_given_word[t]
            s = self.sif_index.get(tok)
            if s is not None:
                sif[i] = self.sif_dirs[s]
        return topic, sif
