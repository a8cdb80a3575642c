"""losses of the Mirror plugin; see registration.py for how OpenNMT-py finds them."""
