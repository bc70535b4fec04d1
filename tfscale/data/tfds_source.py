"""Loading tfds data sets, embedded or public, into memory without ever touching the network."""
import fcntl
import os

import numpy as np
import tensorflow_datasets as tfds

from tfscale.errors import ConfigError
from tfscale.data.source import InMemorySource
from tfscale.data.info import DataInfo, input_scale_for, tfds_data_dir


def builder_for(data_config, builder_cls=None):
    """The tfds builder of a config's data set; a ConfigError if unknown or not prepared.

    `builder_cls` is given for the embedded data sets, which are prepared here on first use;
    any other name must already be prepared in the data dir (a real download needs a network).
    """
    data_dir = tfds_data_dir(data_config)
    if builder_cls is not None:
        builder = builder_cls(data_dir=data_dir)
        if not builder.is_prepared():
            # Workers of one job may start together: one prepares, the others wait for it.
            os.makedirs(data_dir, exist_ok=True)
            with open(os.path.join(data_dir, f".{builder.name}.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                builder = builder_cls(data_dir=data_dir)  # reads what another worker prepared
                if not builder.is_prepared():
                    builder.download_and_prepare()
        return builder
    try:
        builder = tfds.builder(data_config.name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            f"unknown data set {data_config.name!r}: not embedded (digits, synthetic), not a "
            f"registered tfds name, and not prepared in {data_dir}") from None
    if not builder.is_prepared():
        raise ConfigError(
            f"data set {data_config.name!r} is not prepared in {builder.data_path}; on a machine "
            f"with network access run `tfds build {data_config.name} --data_dir={data_dir}` and "
            "copy that folder here, or set data.data_dir to where it is")
    return builder


def _keys(builder, data_config):
    """(input, label) feature names: data.input_key/label_key, else the supervised keys."""
    supervised = builder.info.supervised_keys or (None, None)
    keys = (data_config.input_key or supervised[0], data_config.label_key or supervised[1])
    features = builder.info.features.keys()
    if None in keys:
        raise ConfigError(f"data set {builder.name!r} has no supervised keys; set data.input_key "
                          f"and data.label_key (its features: {', '.join(sorted(features))})")
    for key in keys:
        if key not in features:
            raise ConfigError(f"data set {builder.name!r} has no feature {key!r}; "
                              f"its features: {', '.join(sorted(features))}")
    return keys


def _split(builder, split, keys):
    """A split, a slice of one or a sum (tfds' split strings: `train[:85%]`, `train[85%:]+test`),
    so a validation split can be carved out of the training data."""
    try:
        builder.info.splits[split]
    except (KeyError, ValueError):
        raise ConfigError(f"data set {builder.name!r} has no split {split!r}; it has "
                          f"{', '.join(sorted(builder.info.splits))} (slices like train[:85%] "
                          "work too)") from None
    examples = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    return np.asarray(examples[keys[0]]), np.asarray(examples[keys[1]]).astype(np.int32)


def load(data_config, builder_cls=None, input_scale=None):
    """Both splits of a classification data set, in memory."""
    builder = builder_for(data_config, builder_cls)
    keys = _keys(builder, data_config)
    train = _split(builder, data_config.train_split, keys)
    evaluation = _split(builder, data_config.eval_split, keys)
    label_feature = builder.info.features[keys[1]]
    num_classes = getattr(label_feature, "num_classes", None) or int(train[1].max()) + 1
    info = DataInfo(
        name=builder.name,
        input_shape=tuple(train[0].shape[1:]),
        num_classes=int(num_classes),
        input_scale=input_scale if input_scale is not None else input_scale_for(train[0].dtype),
        num_train=len(train[1]),
        num_eval=len(evaluation[1]),
    )
    return InMemorySource(info, train, evaluation)
