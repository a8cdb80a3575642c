"""Corpus preparation: raw dialogue datasets -> OpenNMT-ready `{split}.src` / `{split}.tgt`.

Run as `python -m onmt_mirror.prepare {dailydialog,movietriples} --input DIR --output DIR`.
Standard library only, so that preparing data never waits for torch or OpenNMT-py to import.
Format and counts: docs/data.md.
"""
