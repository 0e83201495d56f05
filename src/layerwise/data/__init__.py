"""Data: locate real data through a setting, load data sets by name, and batch them for a model.

- ``locate``: the data root (``--data-dir``, ``LAYERWISE_DATA``, ``./data``, ``../shared/data``) and cache;
- ``load``: ``load_dataset(name, split)``; ``dataset``: ``LayerwiseDataset``;
- one module per family: ``images`` (digits, CIFAR-10), ``text`` (the embedded sentences), ``glue`` (every GLUE
  task in its official layout), ``tables`` (any .tsv/.csv/.jsonl table of text), ``hub`` (``hf:`` names),
  ``corpora`` (plain text);
- ``spec``: ``InputSpec``, what a model consumes; ``tokenizer``: the byte-level tokenizer;
- ``collate``: ``make_loader``; ``augment``: seeded image augmentation; ``batches``: batch helpers.
"""

from layerwise.data.augment import augment_images
from layerwise.data.batches import Batch, labels_of, materialize, model_inputs, to_device
from layerwise.data.collate import make_loader, prepare_images
from layerwise.data.corpora import corpus_blocks
from layerwise.data.dataset import Kind, LayerwiseDataset
from layerwise.data.images import CIFAR10_CLASSES, build_cifar10_cache
from layerwise.data.load import KNOWN_NAMES, load_dataset
from layerwise.data.locate import CACHE_ENV, DATA_ENV, DEFAULT_DATA_DIRS, find_data
from layerwise.data.spec import InputSpec, Modality, image_spec
from layerwise.data.glue import GLUE_TASKS, GlueTask, load_glue
from layerwise.data.tables import Columns, load_table, read_table
from layerwise.data.text import SENTIMENT_CLASSES, parse_tsv
from layerwise.data.tokenizer import ByteTokenizer

__all__ = ["Columns", "GLUE_TASKS", "GlueTask", "load_table", "read_table", "Kind", "Modality", "Batch", "ByteTokenizer", "CACHE_ENV", "CIFAR10_CLASSES", "DATA_ENV", "DEFAULT_DATA_DIRS", "InputSpec",
           "KNOWN_NAMES", "LayerwiseDataset", "SENTIMENT_CLASSES", "augment_images", "build_cifar10_cache",
           "corpus_blocks", "find_data", "image_spec", "labels_of", "load_dataset", "load_glue", "make_loader",
           "materialize", "model_inputs", "parse_tsv", "prepare_images", "to_device"]
