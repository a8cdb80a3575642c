"""Run in a `spawn` child (as OpenNMT-py's data workers are): is the plugin there?"""


def plugin_state():
    import onmt
    import onmt.trainer
    from onmt.transforms import AVAILABLE_TRANSFORMS

    return ("mirror_triple" in AVAILABLE_TRANSFORMS,
            onmt.trainer.LossCompute.__name__, onmt.utils.Statistics.__name__)
