"""losses of the Mirror plugin; see registration/loss.py for how OpenNMT-py finds them."""
