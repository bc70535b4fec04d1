"""Data sets by name: embedded ones (no download), `synthetic`, ArrayRecord folders prepared by
`experiments.prepare` (`array_record`, streamed), any prepared tfds data set, and a user's own
`DataSource` factory named "package.module:function" (`factory(data_config, seq_len) ->
DataSource`). Each is a `DataSource` (`source.py`)."""
import numpy as np

from tfscale import importing
from tfscale.errors import ConfigError
from tfscale.data import (array_record, digits, masking, pycode, pycode_package, service, site_packages, synthetic,
                          text, tfds_source, tfrecord)
from tfscale.data.info import DataInfo, tfds_data_dir
from tfscale.data.batches import check_batch_size, eval_dataset, evenly_spaced, train_dataset_fn
from tfscale.data.source import DataSource, InMemorySource, TrainSubset

# name -> load(data_config, seq_len) -> DataSource. Names not listed here are looked up in tfds.
DATASETS = {
    "digits": lambda c, _: tfds_source.load(c, builder_cls=digits.Digits, input_scale=1.0 / 16),
    "pycode": lambda c, seq_len: text.load(tfds_source.builder_for(c, pycode.Pycode), seq_len or 128),
    "synthetic": lambda c, _: synthetic.load(c),
    "pycode_package": lambda c, _: _tokens(tfds_source.load(c, builder_cls=pycode_package.PycodePackage, input_scale=1.0)),
    "array_record": lambda c, _: array_record.ArrayRecordSource(c.path),
    "site_packages": lambda c, seq_len: site_packages.load(c, seq_len or 128),
    "tfrecord": lambda c, _: tfrecord.TFRecordSource(c),
}


def _tokens(source):
    """Byte inputs as int32 token ids (not pixels to rescale)."""
    as_ids = lambda split: (split[0].astype(np.int32), split[1])  # noqa: E731
    return InMemorySource(source.info, as_ids(source.train), as_ids(source.eval))


def check_name(data_config):
    """Fails early (before a workdir is touched) on an unknown or unprepared data set."""
    if not data_config.name:
        raise ConfigError("data.name is empty")
    service.check(data_config)
    if importing.is_importable_name(data_config.name):
        importing.function_by_name(data_config.name, "data")
    elif data_config.name == "array_record":
        if not data_config.get("path"):
            raise ConfigError("data.name array_record needs data.path: the folder experiments.prepare wrote")
        array_record.read_manifest(data_config.path)
    elif data_config.name == "tfrecord":
        for key in ("path", "eval_path"):
            if not data_config.get(key):
                raise ConfigError(f"data.name tfrecord needs data.{key}: a glob of TFRecord files")
    elif data_config.name not in DATASETS:
        tfds_source.builder_for(data_config)


def load(data_config, seq_len=None, seed=0):
    """The config's data set as a `DataSource`; `seq_len` is the model's context (text data).
    `data.train_examples` > 0 keeps that many training examples, evenly spaced. With
    `data.mask_rate` > 0 its token inputs are masked for masked-LM training (`masking.py`, masks
    drawn from `seed`)."""
    source = _load(data_config, seq_len)
    count = data_config.get("train_examples", 0)
    if count:
        if type(source).train_dataset_fn is not DataSource.train_dataset_fn:
            raise ConfigError(f"data.train_examples needs a data set read by index; {data_config.name!r} is streamed")
        if count > source.info.num_train:
            raise ConfigError(f"data.train_examples {count} is more than the {source.info.num_train} training "
                              f"examples of {data_config.name!r}")
        source = TrainSubset(source, count)
    rate = data_config.get("mask_rate", 0.0)
    return masking.MaskedTokens(source, rate, seed) if rate else source


def _load(data_config, seq_len):
    if importing.is_importable_name(data_config.name):
        factory = importing.function_by_name(data_config.name, "data")
        source = importing.call_user(factory, data_config.name, "data", data_config, seq_len)
        if not isinstance(source, DataSource):
            raise ConfigError(f"data {data_config.name!r} returned {type(source).__name__}, not a "
                              "tfscale.data.DataSource (wrap arrays in InMemorySource)")
        return source
    if data_config.name in DATASETS:
        return DATASETS[data_config.name](data_config, seq_len)
    return tfds_source.load(data_config)


__all__ = ["DATASETS", "DataInfo", "DataSource", "InMemorySource", "check_batch_size", "check_name", "eval_dataset", "evenly_spaced", "load",
           "tfds_data_dir", "train_dataset_fn"]
