"""The one formula for per-epoch seeds, so every random stream of training is a function of
``(seed, epoch, rank)`` only and a resumed run draws what an uninterrupted one would.

Streams that must not coincide (the loader's worker seeds, the batched augmentation, the
resident sampler) use different prime factors; the factors are the ones each stream has
always used, so the draws are unchanged.
"""

from __future__ import annotations

#: stream factors: DataLoader worker seeds (rank-independent: DistributedSampler shards),
#: batched on-device augmentation, device-resident slice sampling
LOADER_STREAM, AUGMENT_STREAM, RESIDENT_STREAM = 1, 1009, 7919


def epoch_seed(seed: int, epoch: int, rank: int = 0, stream: int = LOADER_STREAM) -> int:
    """``(seed * 100_003 + epoch) * stream + rank``: the seed of one stream in one epoch."""
    return (int(seed) * 100_003 + int(epoch)) * stream + int(rank)
