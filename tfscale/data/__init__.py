"""Data sets by name: embedded ones (no download), `synthetic`, and any prepared tfds data set."""
from tfscale.errors import ConfigError
from tfscale.data import digits, pycode, synthetic, text, tfds_source
from tfscale.data.info import Data, DataInfo, tfds_data_dir
from tfscale.data.batches import check_batch_size, eval_dataset, evenly_spaced, train_dataset_fn

# name -> load(data_config, seq_len) -> Data. Names not listed here are looked up in tfds.
DATASETS = {
    "digits": lambda c, _: tfds_source.load(c, builder_cls=digits.Digits, input_scale=1.0 / 16),
    "pycode": lambda c, seq_len: text.load(tfds_source.builder_for(c, pycode.Pycode), seq_len or 128),
    "synthetic": lambda c, _: synthetic.load(c),
}


def check_name(data_config):
    """Fails early (before a workdir is touched) on an unknown or unprepared data set."""
    if not data_config.name:
        raise ConfigError("data.name is empty")
    if data_config.name not in DATASETS:
        tfds_source.builder_for(data_config)


def load(data_config, seq_len=None):
    """Loads the config's data set into memory; `seq_len` is the model's context (text data)."""
    if data_config.name in DATASETS:
        return DATASETS[data_config.name](data_config, seq_len)
    return tfds_source.load(data_config)


__all__ = ["DATASETS", "Data", "DataInfo", "check_batch_size", "check_name", "eval_dataset", "evenly_spaced", "load",
           "tfds_data_dir", "train_dataset_fn"]
