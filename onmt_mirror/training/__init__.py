"""Mirror's own training step: batches padded to length buckets (buckets.py), replayed as
CUDA graphs (captured_step.py); registration/training.py hands it the stock Trainer's
batches."""
