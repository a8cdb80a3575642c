"""onmt-mirror: the Mirror dialogue CVAE as a plugin of the stock OpenNMT-py 3.5.1 CLIs.

This file stays import-free: the .pth hook imports `onmt_mirror._hook` in every Python
process, so anything here would slow down unrelated programs. The plugin itself is
`onmt_mirror.registration`, imported by the hook once `onmt` is imported.
"""

__version__ = "0.1.0"
