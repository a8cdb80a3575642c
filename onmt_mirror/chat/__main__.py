"""python -m onmt_mirror.chat: the chat page, in front of a running onmt_server.

    onmt_server --ip 127.0.0.1 --port 5000 -m examples/server/mirror.conf.json &
    python -m onmt_mirror.chat --server http://127.0.0.1:5000/translator --port 8000
    # then open http://127.0.0.1:8000/

    python -m onmt_mirror.chat --cli -model CKPT [onmt_translate options]
    # the same conversation in this terminal, no server (onmt_mirror/chat/terminal.py)

Both listen on / serve only this machine: the page has no authentication, and a model
server open to the network lets anyone use (and slow down) it.
"""
import argparse
import sys

from onmt_mirror.chat.proxy import ChatConfig, make_server
from onmt_mirror.errors import MirrorError, run_command


def build_parser():
    d = ChatConfig()
    p = argparse.ArgumentParser(prog="python -m onmt_mirror.chat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=d.server,
                   help="onmt_server's URL up to its --url_root (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve the page on (default %(default)s: this machine "
                   "only; the page has no authentication)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-id", type=int, default=d.model_id,
                   help="config entry for a first response (default %(default)s: z = "
                   "prior mean in examples/server/mirror.conf.json)")
    p.add_argument("--another-id", type=int, default=d.another_id,
                   help='config entry for "another response" (default %(default)s: '
                   "-mirror_z sample)")
    p.add_argument("--turns", type=int, default=d.turns,
                   help="send the last N turns (default %(default)s: context + query; "
                   "use -mirror_context_turns + 1)")
    p.add_argument("--sep", default=d.sep, help="turn separator (-mirror_turn_sep)")
    p.add_argument("--max-turn-chars", type=int, default=d.max_turn_chars)
    p.add_argument("--timeout", type=float, default=d.timeout,
                   help="seconds to wait for onmt_server (default %(default)s)")
    p.add_argument("--read-timeout", type=float, default=d.read_timeout,
                   help="seconds a client may take to send a request; then HTTP 400 "
                   "(default %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="requests handled at once (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    p.add_argument("--cli", action="store_true", help="chat in this terminal instead: "
                   "python -m onmt_mirror.chat --cli -model CKPT [onmt_translate options]")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return run_command("onmt_mirror.chat", chat, argv)


def chat(argv):
    if "--cli" in argv:
        from onmt_mirror.chat import terminal  # torch and OpenNMT-py: only for --cli

        return terminal.main([a for a in argv if a != "--cli"])
    args = build_parser().parse_args(argv)
    if args.turns < 1:
        raise MirrorError("--turns must be >= 1")
    cfg = ChatConfig(server=args.server, model_id=args.model_id,
                     another_id=args.another_id, turns=args.turns, sep=args.sep,
                     max_turn_chars=args.max_turn_chars,
                     timeout=args.timeout, read_timeout=args.read_timeout,
                     threads=args.threads, verbose=not args.quiet)
    server = make_server(cfg, args.host, args.port)
    print("Mirror chat on http://%s:%s/ -> %s" % (args.host, server.effective_port,
                                                  cfg.server), flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
