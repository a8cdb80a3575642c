"""models of the Mirror plugin; see registration/model.py for how OpenNMT-py finds them."""
