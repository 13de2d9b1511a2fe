"""Data sets: real MNIST and CIFAR-10 loaders, image folders and the embedded MNIST sample.

Every loader returns a `Dataset` of float32 images in [0, 1], channels last, with int64
labels. See `load_dataset` for where files are looked for. `hdf5_dataset` streams images
larger than memory from an HDF5 file as a `tf.data` pipeline.
"""

from saliency_detect.data._dataset import CIFAR10_CLASSES, MNIST_CLASSES, Dataset
from saliency_detect.data._images import IMAGE_SUFFIXES, read_images
from saliency_detect.data._keras_files import ENV_VAR, DatasetNotFoundError, keras_cache_dir
from saliency_detect.data._loading import available_datasets, load_dataset
from saliency_detect.data._streaming import hdf5_dataset

__all__ = [
    "CIFAR10_CLASSES",
    "ENV_VAR",
    "IMAGE_SUFFIXES",
    "MNIST_CLASSES",
    "Dataset",
    "DatasetNotFoundError",
    "available_datasets",
    "hdf5_dataset",
    "keras_cache_dir",
    "load_dataset",
    "read_images",
]
