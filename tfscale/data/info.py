"""What a model and a pipeline need to know about a data set."""
import dataclasses
import os

import numpy as np

IGNORED = -1  # a target that counts for nothing: the unmasked positions of masked-LM data


@dataclasses.dataclass(frozen=True)
class DataInfo:
    name: str
    input_shape: tuple  # one example, without the batch dimension
    num_classes: int
    input_scale: float  # raw inputs x input_scale = model inputs (inside the model)
    num_train: int
    num_eval: int
    task: str = "classifier"  # "classifier" (one label per example) | "lm" (a target per position)
    bytes_per_token: float = 1.0  # lm: held-out text bytes per token, so losses convert to bits per byte


def tfds_data_dir(data_config):
    """The tfds data dir of a config: data.data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return os.path.expanduser(
        data_config.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def input_scale_for(dtype):
    """Raw uint8 pixels are scaled to [0, 1]; other inputs are taken as they are."""
    return 1.0 / 255.0 if np.dtype(dtype) == np.uint8 else 1.0
