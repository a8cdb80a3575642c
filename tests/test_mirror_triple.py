"""The mirror_triple transform and the corpus check that runs before training."""
from argparse import Namespace

import pytest

from onmt_mirror.data_check import check_corpora
from onmt_mirror.errors import MirrorError
from onmt_mirror.opts import QUERY_TOKEN, TURN_TOKEN
from onmt_mirror.transforms.mirror_triple import MirrorTripleTransform

Q, T = QUERY_TOKEN, TURN_TOKEN


def opts(**kw):
    base = dict(mirror_turn_sep="__eou__", mirror_context_turns=1,
                mirror_max_context_tokens=100, mirror_max_utterance_tokens=45,
                mirror_bad_line="error", seed=-1, data={}, src=None, tgt=None)
    base.update(kw)
    return Namespace(**base)


def apply(src, tgt="ok .", **kw):
    t = MirrorTripleTransform(opts(**kw))
    ex = {"src": src.split(" "), "tgt": None if tgt is None else tgt.split(" "),
          "cid": "train", "cid_line_number": 4}
    return t, t.apply(ex, is_train=True)


def test_context_query_response():
    _, ex = apply("a b __eou__ c d __eou__ e f", tgt="g h")
    assert ex["src"] == ["c", "d", Q, "e", "f"] and ex["tgt"] == ["g", "h"]


def test_more_context_turns_are_joined_with_the_turn_token():
    _, ex = apply("a b __eou__ c d __eou__ e f", mirror_context_turns=3)
    assert ex["src"] == ["a", "b", T, "c", "d", Q, "e", "f"]


def test_translate_time_without_tgt():
    _, ex = apply("hi __eou__ there", tgt=None)
    assert ex["src"] == ["hi", Q, "there"] and ex["tgt"] is None


def test_truncation_sides_and_counts():
    t, ex = apply("1 2 3 4 5 __eou__ 6 7 8 9", tgt="a b c d e",
                  mirror_max_context_tokens=3, mirror_max_utterance_tokens=2)
    assert ex["src"] == ["3", "4", "5", Q, "6", "7"]  # c keeps its end, x its start
    assert ex["tgt"] == ["a", "b"]
    assert t.counts["truncated_c"] == t.counts["truncated_x"] == 1
    assert "truncated_y: 1" in t.stats()


def test_double_spaces_do_not_make_tokens():
    _, ex = apply("a  b __eou__  c")
    assert ex["src"] == ["a", "b", Q, "c"]


@pytest.mark.parametrize("src,message", [
    ("only one turn", "line 5: only one turn"),
    ("a __eou__ __eou__ b", "line 5: empty turn"),
    ("a __eou__", "line 5: empty turn"),
])
def test_bad_lines_name_corpus_and_line(src, message):
    with pytest.raises(MirrorError, match="corpus 'train', file .*" + message):
        apply(src)


def test_bad_lines_skipped_and_counted_by_option():
    t, ex = apply("only one turn", mirror_bad_line="skip")
    assert ex is None and t.counts["skipped_one_turn"] == 1
    assert "skipped_one_turn: 1" in t.stats()


def write(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


def corpus_opts(src, tgt, **kw):
    return opts(data={"train": {"path_src": src, "path_tgt": tgt,
                                "transforms": ["mirror_triple"]}}, **kw)


def test_check_unequal_line_counts(tmp_path):
    src = write(tmp_path, "a.src", "x __eou__ y\nx __eou__ y\n")
    tgt = write(tmp_path, "a.tgt", "z\n")
    with pytest.raises(MirrorError, match=r"corpus 'train': .*a\.src has more lines "
                                          r"than .*a\.tgt \(2\+ vs 1\)"):
        check_corpora(corpus_opts(src, tgt))
    tgt = write(tmp_path, "b.tgt", "z\nz\nz\n")
    with pytest.raises(MirrorError, match=r"a\.src has 2 lines but .*b\.tgt has 3"):
        check_corpora(corpus_opts(src, tgt))


def test_check_invalid_utf8_names_file_and_line(tmp_path):
    src = write(tmp_path, "u.src", b"x __eou__ y\nx __eou__ \xff y\n")
    tgt = write(tmp_path, "u.tgt", "z\nz\n")
    with pytest.raises(MirrorError, match=r"u\.src, line 2: invalid UTF-8 \(byte 0xff"):
        check_corpora(corpus_opts(src, tgt))


def test_check_turn_structure_and_empty_response(tmp_path):
    src = write(tmp_path, "t.src", "x __eou__ y\n   \n")
    tgt = write(tmp_path, "t.tgt", "z\nz\n")
    with pytest.raises(MirrorError, match=r"t\.src, line 2: only one turn"):
        check_corpora(corpus_opts(src, tgt))
    src = write(tmp_path, "e.src", "x __eou__ y\nx __eou__ y\n")
    tgt = write(tmp_path, "e.tgt", "z\n\n")
    with pytest.raises(MirrorError, match=r"e\.src, line 2: empty response in .*e\.tgt"):
        check_corpora(corpus_opts(src, tgt))


def test_check_skip_mode_counts_instead_of_failing(tmp_path, caplog):
    src = write(tmp_path, "s.src", "x __eou__ y\nlonely\n")
    tgt = write(tmp_path, "s.tgt", "z\nz\n")
    check_corpora(corpus_opts(src, tgt, mirror_bad_line="skip"))
    assert "1 of 2 lines will be skipped" in caplog.text


def test_check_missing_file(tmp_path):
    with pytest.raises(MirrorError, match="file not found: .*nope.src"):
        check_corpora(corpus_opts(str(tmp_path / "nope.src"), None))


def _numericalized(c, x, y):
    src = " ".join(["w"] * c + [Q] + ["w"] * x)
    return {"src": {"src": src, "src_ids": [0] * (c + 1 + x)},
            "tgt": {"tgt": " ".join(["w"] * y), "tgt_ids": [0] * (y + 2)}}


def test_triple_sort_key_keeps_every_field_short_together():
    """The iterator sorts buckets with this key (registration/data.py): batches cut from the
    sorted bucket have a far shorter longest y than with the stock (src, tgt) key, and
    lines without the query marker keep the stock key."""
    import random

    import onmt
    import onmt.inputters.dynamic_iterator as dyn
    from onmt.inputters.text_utils import text_sort_key

    from onmt_mirror.transforms.mirror_triple import triple_sort_key

    assert dyn.text_sort_key.func is triple_sort_key and onmt  # the patched global
    assert dyn.text_sort_key(_numericalized(3, 5, 9)) == (2, 2, 5)
    plain = {"src": {"src": "a b c", "src_ids": [0, 0, 0]},
             "tgt": {"tgt": "d", "tgt_ids": [0, 0, 0]}}
    assert dyn.text_sort_key(plain) == text_sort_key(plain) == (3, 3)
    rng = random.Random(0)
    bucket = [_numericalized(rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 40))
              for _ in range(4096)]

    def mean_longest_y(key):
        ordered = sorted(bucket, key=key)
        batches = [ordered[i:i + 256] for i in range(0, len(ordered), 256)]
        return sum(max(len(e["tgt"]["tgt_ids"]) for e in b) for b in batches) / len(batches)

    stock, ours = mean_longest_y(text_sort_key), mean_longest_y(dyn.text_sort_key)
    assert stock > 40 and ours < 0.8 * stock, (stock, ours)
