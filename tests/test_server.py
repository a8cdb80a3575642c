"""The stock onmt_server serving a Mirror checkpoint (examples/server, docs/server.md).

A tiny Mirror is trained through the stock CLIs (once per test session, shared with
test_chat.py), then `onmt_server` is started on 127.0.0.1 with a JSON config of two
entries, z = prior mean (id 100) and z sampled (id 101), both with the plugin's
`preprocess` function, and is sent requests whose src is the dialogue history.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

BIN = os.path.dirname(sys.executable)
# One context turn and query per window. "hello . / how are you ?" has four responses:
# only z tells them apart, so prior samples must give different replies there.
# "hello . / good morning !" is the chat page's first turn (its opening is "hello ."); its
# reply, with the user's "how are you ?", makes that ambiguous window the second turn.
DIALOGUES = [
    ("do you like tea ?", "yes , very much .", "then let us have some tea ."),
    ("where is the station ?", "it is near the bank .", "thank you , i will walk there ."),
    ("what time is it ?", "it is five o'clock .", "oh no , i am late for work ."),
    ("can you help me ?", "sure , what is wrong ?", "my car will not start today ."),
    ("hello .", "good morning !", "hello ."),
    ("hello .", "how are you ?", "i am fine , thanks ."),
    ("hello .", "how are you ?", "not bad , and you ?"),
    ("hello .", "how are you ?", "a bit tired today ."),
    ("hello .", "how are you ?", "great , i just got a new job ."),
]
HOWDY = "hello . __eou__ how are you ?"
CHECKPOINT = "model_step_300.pt"


def _run(cmd, cwd):
    proc = subprocess.run([os.path.join(BIN, cmd[0])] + cmd[1:], cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def tiny_checkpoint(tmp_path_factory):
    """Train once per session (in the session's base temp dir); -> the run directory."""
    root = tmp_path_factory.getbasetemp() / "mirror_server_model"
    if (root / "run" / CHECKPOINT).exists():
        return root / "run"
    root.mkdir(exist_ok=True)
    (root / "train.src").write_text("".join("%s __eou__ %s\n" % (c, x)
                                            for c, x, _ in DIALOGUES))
    (root / "train.tgt").write_text("".join(y + "\n" for *_, y in DIALOGUES))
    corpus = {"path_src": "train.src", "path_tgt": "train.tgt",
              "transforms": ["mirror_triple"]}
    cfg = {"save_data": "run/sample", "src_vocab": "run/vocab.txt", "share_vocab": True,
           "overwrite": True, "data": {"train": corpus, "valid": dict(corpus)},
           "encoder_type": "mirror", "word_vec_size": 24, "hidden_size": 64,
           "layers": 1, "mirror_z_size": 8, "dropout": 0.0, "input_feed": 0,
           # a small constant KL weight: the decoder learns to use z (the four replies)
           "mirror_kl_weight": 0.01, "mirror_kl_anneal_steps": 0,
           "save_model": "run/model",
           "save_checkpoint_steps": 300, "train_steps": 300, "valid_steps": 300,
           "report_every": 100, "batch_type": "sents", "batch_size": 8,
           "optim": "adam", "learning_rate": 0.01, "param_init": 0.1, "seed": 3,
           "num_workers": 1, "bucket_size": 64}
    (root / "mirror.yaml").write_text(yaml.safe_dump(cfg))
    _run(["onmt_build_vocab", "-config", "mirror.yaml", "-n_sample", "-1"], root)
    _run(["onmt_train", "-config", "mirror.yaml"], root)
    return root / "run"


def server_config(models_root, **custom):
    entry = {"model": CHECKPOINT, "load": True, "timeout": -1,
             "preprocess": ["onmt_mirror.chat.preprocess.mirror_history"],
             "custom_opt": dict({"mirror_opening": "hello .",
                                 "mirror_max_request_tokens": 200,
                                 "mirror_max_request_chars": 20000}, **custom)}
    opt = {"transforms": "mirror_triple", "beam_size": 5, "max_length": 20}
    return {"models_root": str(models_root), "models": [
        dict(entry, id=100, opt=opt),
        dict(entry, id=101, opt=dict(opt, mirror_z="sample", seed=1234)),
        dict(entry, id=102, opt=opt, custom_opt={}),  # no opening turn configured
    ]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StockServer:
    """`onmt_server` in a subprocess; .url is its --url_root on 127.0.0.1."""

    def __init__(self, config_path, log_path):
        port = free_port()
        self.url = "http://127.0.0.1:%d/translator" % port
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "onmt_server"), "--ip", "127.0.0.1", "--port", str(port),
             "--model_config", str(config_path)], stdout=self.log,
            stderr=subprocess.STDOUT)
        self.log_path = log_path

    def wait_ready(self, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("onmt_server exited:\n" + open(self.log_path).read())
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if json.load(r)["status"] == "ok":
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise AssertionError("onmt_server not up in %ds" % timeout)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def start_stock_server(tmp_path_factory, name):
    for module in ("flask", "waitress"):  # onmt_server's imports, not OpenNMT-py deps
        pytest.importorskip(module, reason="onmt_server needs flask and waitress "
                            "(pip install flask waitress)")
    models_root = tiny_checkpoint(tmp_path_factory)
    where = tmp_path_factory.mktemp(name)
    (where / "conf.json").write_text(json.dumps(server_config(models_root)))
    return StockServer(where / "conf.json", where / "server.log").wait_ready()


def post(url, body, raw=False):
    """-> (HTTP status, parsed JSON or text)."""
    data = body if raw else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    server = start_stock_server(tmp_path_factory, "server")
    yield server
    server.stop()


def translate(stock, model_id, *sources):
    status, out = post(stock.url + "/translate",
                       [{"id": model_id, "src": s} for s in sources])
    assert status == 200, out
    return out


def test_mean_entry_answers_dialogue_histories(stock):
    histories = ["%s __eou__ %s" % (c, x) for c, x, _ in DIALOGUES[:4]]
    out = translate(stock, 100, *histories)
    assert [r["tgt"] for r in out[0]] == [y for *_, y in DIALOGUES[:4]]
    assert [r["src"] for r in out[0]] == histories  # the request's text, untouched
    # earlier turns are dropped as the transform does (-mirror_context_turns 1)
    longer = translate(stock, 100, "good morning . __eou__ " + histories[0])
    assert longer[0][0]["tgt"] == DIALOGUES[0][2]


def test_sample_entry_draws_a_new_z_per_request(tmp_path_factory, tmp_path, monkeypatch):
    """The mechanism, not the replies (a tiny model's z may change no word): the stock
    server's ServerModel, in this process, with the prior, the decoder's z and the torch
    random state at each draw recorded. The sampled entry draws z = mu + sigma * eps with
    eps the running stream's next normal, a new one per request; the mean entry hands the
    decoder the prior mean itself and draws nothing."""
    import torch
    from onmt.translate.translation_server import TranslationServer
    from onmt_mirror.models import mirror

    (tmp_path / "conf.json").write_text(json.dumps(server_config(
        tiny_checkpoint(tmp_path_factory))))
    server = TranslationServer()
    server.start(str(tmp_path / "conf.json"))
    priors, zs, states = [], [], []
    prior, init_state = mirror.MirrorModel.prior, mirror.MirrorDecodingInterface.init_state
    draw = mirror.reparameterize
    monkeypatch.setattr(mirror.MirrorModel, "prior",
                        lambda self, enc: priors.append(prior(self, enc)) or priors[-1])
    monkeypatch.setattr(mirror.MirrorDecodingInterface, "init_state", lambda self, *a: (
        zs.append(a[2][2].clone()), init_state(self, *a))[1])
    monkeypatch.setattr(mirror, "reparameterize", lambda mu, logvar: (
        states.append(torch.get_rng_state()), draw(mu, logvar))[1])

    torch.manual_seed(7)
    for model_id in (101, 101, 100, 100):
        server.run([{"id": model_id, "src": HOWDY}])
    assert len(priors) == len(zs) == 4 and len(states) == 2  # the mean entry draws none
    for (mu, logvar), z, state in zip(priors, zs, states):  # sampled entry
        eps = torch.randn(mu.shape, generator=torch.Generator().set_state(state))
        assert torch.allclose(z, mu + torch.exp(0.5 * logvar) * eps, atol=1e-6)
    assert not torch.equal(states[0], states[1]) and not torch.equal(zs[0], zs[1])
    assert torch.equal(priors[0][0], priors[1][0])  # same history, same prior
    for (mu, _), z in zip(priors[2:], zs[2:]):  # mean entry
        assert torch.equal(z, mu)


def test_first_turn_gets_the_configured_opening_as_context(stock):
    alone = translate(stock, 100, "how are you ?")[0][0]["tgt"]
    assert alone == translate(stock, 100, HOWDY)[0][0]["tgt"]
    status, out = post(stock.url + "/translate", [{"id": 102, "src": "how are you ?"}])
    assert status == 200 and out["status"] == "error"  # the stock server's error reply
    assert "one turn only" in out["error"] and "mirror_opening" in out["error"]


def loaded(stock):
    with urllib.request.urlopen(stock.url + "/models", timeout=30) as r:
        return {m["model_id"]: m["loaded"] for m in json.load(r)}


@pytest.mark.parametrize("src, message", [
    ("", "empty history"),
    ("hello . __eou__ __eou__ how are you ?", "empty turn"),
    (" ".join(["word"] * 300) + " __eou__ hi", "history too long: 302 tokens"),
    ("hello . __eou__ " + "x" * 100000, "history too long: 100016 characters (at most "
     "20000)"),
])
def test_bad_histories_get_the_stock_error_reply_and_the_model_stays_loaded(
        stock, src, message):
    """Refused by the preprocess hook before the model: the stock route would unload the
    model (the next request paid a reload); registration/server.py keeps it loaded."""
    status, out = post(stock.url + "/translate", [{"id": 100, "src": src}])
    assert status == 200 and out["status"] == "error" and message in out["error"]
    assert loaded(stock) == {100: True, 101: True, 102: True}
    assert translate(stock, 100, HOWDY)[0][0]["tgt"]


def test_stock_server_answers_malformed_requests_with_html_errors(stock):
    """What the stock flask app does (the chat command turns these into JSON 4xx)."""
    assert post(stock.url + "/translate", b'[{"id": 100, "src": ', raw=True)[0] == 400
    assert post(stock.url + "/translate", {"id": 100, "src": HOWDY})[0] == 500
    assert post(stock.url + "/translate", [{"id": 100}])[0] == 500
    assert translate(stock, 100, HOWDY)[0][0]["tgt"]


def test_z_option_is_checked_by_the_translate_parser(tmp_path_factory, tmp_path):
    models_root = tiny_checkpoint(tmp_path_factory)
    cfg = server_config(models_root)
    cfg["models"] = [dict(cfg["models"][0], opt={"transforms": "mirror_triple",
                                                 "mirror_z": "posterior"})]
    (tmp_path / "conf.json").write_text(json.dumps(cfg))
    server = StockServer(tmp_path / "conf.json", tmp_path / "server.log")
    try:
        assert server.proc.wait(timeout=300) != 0
    finally:
        server.stop()
    assert "invalid choice: 'posterior'" in (tmp_path / "server.log").read_text()
