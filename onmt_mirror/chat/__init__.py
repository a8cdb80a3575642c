"""Talk to a trained Mirror: a chat page in front of OpenNMT-py's stock REST server, or a
terminal.

- `preprocess.py`: the `"preprocess"` function a Mirror entry of the `onmt_server` JSON
  config names, so that a request's `src` is the dialogue history.
- `proxy.py` and `python -m onmt_mirror.chat`: serves the page (`static/`) with waitress,
  checks each request (HTTP 4xx with a message) and forwards it to the stock server's
  `/translator/translate`.
- `terminal.py`, `python -m onmt_mirror.chat --cli -model CKPT`: the same conversation in
  a terminal, no server.
- `text.py`: typed text -> the corpus's tokens (pyonmttok), replies -> text (sacremoses).

See docs/server.md.
"""
