"""Talk to a trained Mirror: a chat page in front of OpenNMT-py's stock REST server.

- `preprocess.py`: the `"preprocess"` function a Mirror entry of the `onmt_server` JSON
  config names, so that a request's `src` is the dialogue history.
- `proxy.py` and `python -m onmt_mirror.chat`: serves the page (`static/`), checks each
  request (HTTP 4xx with a message) and forwards it to the stock server's
  `/translator/translate`.

See docs/server.md.
"""
