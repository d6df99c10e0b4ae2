"""``cnnfast.utils.data``: torch.utils.data's datasets, samplers and ``DataLoader``, with
torch's semantics, so ``from torch.utils.data import DataLoader`` ports by changing the
package name.

Batches are ``cnnfast.Tensor``s. Shuffling draws its seed from the global generator
(``cnnfast.manual_seed``) at each epoch, or from ``generator=``, so seeds change the
order and the same seed repeats it. ``collate_fn`` is called on every batch.
``num_workers`` > 0 loads batches on that many worker *threads* (not processes): they
overlap loading with training wherever either side releases the GIL (NumPy, the C++
kernels); ``pin_memory`` is accepted and does nothing (there is no device memory).

(``cnnfast.data`` keeps the NumPy-batch loader that ``cnnfast train`` uses.)
"""
from .dataset import (ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset,  # noqa: F401
                      random_split)
from .sampler import (BatchSampler, RandomSampler, Sampler, SequentialSampler,  # noqa: F401
                      SubsetRandomSampler, WeightedRandomSampler)
from .dataloader import DataLoader, default_collate, default_convert, get_worker_info  # noqa: F401

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "ConcatDataset", "Subset", "random_split", "Sampler",
           "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler", "BatchSampler",
           "DataLoader", "default_collate", "default_convert", "get_worker_info"]
