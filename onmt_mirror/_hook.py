"""Start-up hook, imported by `onmt_mirror.pth` in every Python process.

It must stay cheap (no torch, no onmt): it only puts a finder on `sys.meta_path` that waits
for the package `onmt` to be imported, then imports `onmt_mirror.registration` right after
`onmt/__init__.py` has run, i.e. before any OpenNMT-py CLI builds its option parser. This
is how the stock `onmt_build_vocab`, `onmt_train` (and its spawned data workers, which
run this same .pth) and `onmt_translate` learn about Mirror.

Set ONMT_MIRROR_DISABLE=1 to switch the plugin off.
"""
import os
import sys

DISABLE_ENV = "ONMT_MIRROR_DISABLE"


class _AfterOnmtImport:
    """A meta-path finder that wraps the loader of `onmt` to run the plugin afterwards."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "onmt":
            return None
        import importlib.util

        sys.meta_path.remove(self)  # one shot: let the normal finders locate onmt
        spec = importlib.util.find_spec("onmt")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            import warnings

            with warnings.catch_warnings():
                # OpenNMT-py 3.5.1 decorates with torch.cuda.amp.custom_fwd/bwd, which
                # current torch deprecates: four warnings in every command otherwise
                warnings.filterwarnings("ignore", r".*torch\.cuda\.amp\.custom_",
                                        FutureWarning)
                exec_module(module)
                import onmt_mirror.registration  # noqa: F401  (registers on import)

        spec.loader.exec_module = exec_then_register
        return spec


def install():
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return
    if "onmt" in sys.modules:
        import onmt_mirror.registration  # noqa: F401
        return
    if not any(isinstance(f, _AfterOnmtImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterOnmtImport())


try:
    install()
except Exception as exc:  # a broken hook must never break unrelated Python programs
    sys.stderr.write("onmt_mirror: start-up hook failed (%s); plugin not loaded\n" % exc)
