"""Building blocks under the models (as OpenNMT-py's onmt/modules): the paper's objects
live in models/, the tensor plumbing they stand on lives here, one concept per module."""
