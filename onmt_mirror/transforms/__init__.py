"""transforms of the Mirror plugin; see registration/data.py for how OpenNMT-py finds them."""
