"""Data for training: datasets and loaders with ``torch.utils.data``'s names, batch
augmentation transforms, and the loaders behind ``cnnfast train --data``."""
from .dataset import Dataset, Subset, TensorDataset, random_split
from .loader import DataLoader, default_collate
from . import transforms
from .sources import (DataError, LabeledImages, channel_stats, load_data, load_digits, load_image_folder,
                      load_npz, split_indices)

__all__ = ["Dataset", "Subset", "TensorDataset", "random_split", "DataLoader", "default_collate", "transforms",
           "DataError", "LabeledImages", "channel_stats", "load_data", "load_digits", "load_image_folder",
           "load_npz", "split_indices"]
