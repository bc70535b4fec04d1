"""`site_packages`: a large real corpus with nothing to download, the installed packages' `.py` files.

About 130 MB of source (test folders left out; 9,276 unique files on the machine this was
written on), ten times `pycode`: what streaming from shards is measured on. It is prepared on
first use into the tfds data dir (`data.data_dir`, $TFDS_DATA_DIR or ~/tensorflow_datasets) by
`prepare_corpus` — deduplicated, split by file, byte windows of the model's context — and
read back by index (`array_record.ArrayRecordSource`), never whole. Its content is whatever is
installed: runs compare only on one environment (the manifest records the file list's digest).
"""
import fcntl
import os
import sysconfig

from tfscale.data import array_record, prepare_corpus
from tfscale.data.info import tfds_data_dir

SHARDS = 16


def root():
    return sysconfig.get_paths()["purelib"]


def folder(data_config, seq_len):
    return os.path.join(tfds_data_dir(data_config), "site_packages", f"bytes_{seq_len}")


def load(data_config, seq_len):
    """The prepared shards (prepared here first if they are not there yet)."""
    out = folder(data_config, seq_len)
    if not os.path.exists(os.path.join(out, array_record.MANIFEST)):
        os.makedirs(out, exist_ok=True)
        # Workers of one job may start together: one prepares, the others wait for it.
        with open(os.path.join(os.path.dirname(out), f".bytes_{seq_len}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.exists(os.path.join(out, array_record.MANIFEST)):
                prepare_corpus.prepare(root(), out, seq_len=seq_len, shards=SHARDS, name="site_packages")
    return array_record.ArrayRecordSource(out)
