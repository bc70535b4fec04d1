"""Loading tfds data sets, embedded or public, into memory without ever touching the network."""
import numpy as np
import tensorflow_datasets as tfds

from tfscale.config import ConfigError
from tfscale.data.info import Data, DataInfo, input_scale_for, tfds_data_dir


def builder_for(data_config, builder_cls=None):
    """The tfds builder of a config's data set; a ConfigError if unknown or not prepared.

    `builder_cls` is given for the embedded data sets, which are prepared here on first use;
    any other name must already be prepared in the data dir (a real download needs a network).
    """
    data_dir = tfds_data_dir(data_config)
    if builder_cls is not None:
        builder = builder_cls(data_dir=data_dir)
        if not builder.is_prepared():
            builder.download_and_prepare()
        return builder
    try:
        builder = tfds.builder(data_config.name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            f"unknown data set {data_config.name!r}: not embedded (digits, synthetic) and not a "
            "tfds name") from None
    if not builder.is_prepared():
        raise ConfigError(
            f"data set {data_config.name!r} is not prepared in {builder.data_path}; on a machine "
            f"with network access run `tfds build {data_config.name} --data_dir={data_dir}` and "
            "copy that folder here, or set data.data_dir to where it is")
    return builder


def _split(builder, split):
    if split not in builder.info.splits:
        raise ConfigError(f"data set {builder.name!r} has no split {split!r}; "
                          f"it has {', '.join(sorted(builder.info.splits))}")
    ds = builder.as_dataset(split=split, as_supervised=True, batch_size=-1)
    inputs, labels = tfds.as_numpy(ds)
    return np.asarray(inputs), np.asarray(labels).astype(np.int32)


def load(data_config, builder_cls=None, input_scale=None):
    """Both splits of a supervised classification data set, in memory."""
    builder = builder_for(data_config, builder_cls)
    if builder.info.supervised_keys is None:
        raise ConfigError(f"data set {builder.name!r} has no (input, label) supervised keys")
    train = _split(builder, data_config.train_split)
    evaluation = _split(builder, data_config.eval_split)
    label_feature = builder.info.features[builder.info.supervised_keys[1]]
    num_classes = getattr(label_feature, "num_classes", None) or int(train[1].max()) + 1
    info = DataInfo(
        name=builder.name,
        input_shape=tuple(train[0].shape[1:]),
        num_classes=int(num_classes),
        input_scale=input_scale if input_scale is not None else input_scale_for(train[0].dtype),
        num_train=len(train[1]),
        num_eval=len(evaluation[1]),
    )
    return Data(info, train, evaluation)
