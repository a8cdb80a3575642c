"""Mirror-specific decoding around OpenNMT-py's Translator: `multi_z` decodes K samples of
the latent z per input and re-ranks them with the backward decoder (docs/decoding.md)."""
