"""Independent parts of Mirror's step side by side on CUDA streams.

At the paper's batch an LSTM's recurrence is a chain of small GEMMs, one per time step and
layer, each filling a fraction of the GPU. The context and utterance encoders do not wait
on each other, nor do the four decoders (each with its attention, output layer and loss):
run on their own streams, their chains overlap. The backward of an op runs on its
forward's stream, so the backward overlaps too, and inside a CUDA graph the fork and the
join become the graph's edges. On the CPU the parts run one after another.
"""
import torch

_side_streams = {}  # device index -> side streams, made once (a stream pool is per process)


def side_streams(device, n):
    streams = _side_streams.setdefault(device.index or 0, [])
    while len(streams) < n:
        streams.append(torch.cuda.Stream(device))
    return streams[:n]


def in_parallel(device, *fns):
    """[fn() for fn in fns], each on its own side stream after all the current stream has
    queued; the current stream then waits for every one of them. Tensors made on a side
    stream are used on the current one only after that join, and the side streams start
    their next work after waiting on it, so no memory is reused while still read."""
    if device.type != "cuda" or not in_parallel.enabled or len(fns) < 2:
        return [fn() for fn in fns]
    main, streams = torch.cuda.current_stream(device), side_streams(device, len(fns))
    outs = []
    for fn, stream in zip(fns, streams):
        stream.wait_stream(main)
        with torch.cuda.stream(stream):
            outs.append(fn())
    for stream in streams:
        main.wait_stream(stream)
    return outs


in_parallel.enabled = True  # the speed benchmark turns it off to measure what it buys
