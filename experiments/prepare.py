r"""Writes data as ArrayRecord shards that runs stream by index, from a config's data set or from a
directory tree of text files.

  # a config's own data set (text: windows of its model.seq_len):
  python -m experiments.prepare --config=experiments/configs/lm.py --workdir=/data/pycode_128
  # any tree of text files (here the installed packages' .py files, test folders left out):
  python -m experiments.prepare --files=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
      --workdir=/data/site_packages --seq_len=128 [--tokenizer=sentencepiece --vocab_size=4096 --model_type=bpe]
  # check a prepared folder byte for byte against its manifest:
  python -m experiments.prepare --verify --workdir=/data/site_packages

Files are deduplicated and split by file (`tfscale/data/corpus.py`: no 64-byte span of the
held-out text occurs in training), tokenized (bytes, or a SentencePiece model trained on the
training files and stored with the shards), and cut into windows of seq_len + 1 tokens.
`manifest.json` records counts, bytes, dtypes, the tokenizer, the split rule and a SHA-256 per
shard (and of the SentencePiece model). Re-running the same command keeps complete shards. Train
from it with `--config.data.name=array_record --config.data.path=DIR`.

The folder is locked while it is written (a second prepare, or a run, on it is refused naming
the holder); `prepare.json` records what it was prepared from, and another config or other flags
are refused rather than mixed in; a prepare that fails before its first complete shard leaves
nothing behind, so the corrected command starts afresh.
"""
import json

from absl import flags

from experiments import cli

cli.define_config_and_workdir("experiments/configs/lm.py[:tiny], whose data set to write",
                              "Folder to write the shards and manifest to.", config_required=False)
flags.DEFINE_string("files", None, "A directory tree of text files to prepare instead of a config's data set.")
flags.DEFINE_integer("shards", 4, "Shards per split (more lets many hosts read in parallel).")
flags.DEFINE_bool("verify", False, "Only check the folder: every shard's SHA-256 and record count against its manifest.")
flags.DEFINE_integer("seq_len", 128, "--files: the model context; windows hold seq_len + 1 tokens.")
flags.DEFINE_enum("tokenizer", "bytes", ["bytes", "sentencepiece"], "--files: the tokenizer.")
flags.DEFINE_integer("vocab_size", 4096, "--files with --tokenizer=sentencepiece: pieces in the model.")
flags.DEFINE_enum("model_type", "bpe", ["unigram", "bpe"],
                  "--files with --tokenizer=sentencepiece: the algorithm (BPE trains far faster than unigram).")
flags.DEFINE_float("validation_share", 0.05, "--files: share of the bytes held out (whole near-duplicate groups).")
flags.DEFINE_list("suffixes", [".py"], "--files: file name endings to read.")
flags.DEFINE_list("skip_folders", ["__pycache__", "idle_test", "test", "testing", "tests"],
                  "--files: folder names not entered.")
# data config keys that change how the data is served, not what is written
NOT_WRITTEN = ("service", "shuffle_buffer")


def config_settings(config, shards):
    """What a folder prepared from a config is recorded with (`array_record.check_settings`)."""
    data_config = {k: v for k, v in json.loads(config.data.to_json()).items() if k not in NOT_WRITTEN}
    return {"data": data_config, "seq_len": config.model.get("seq_len"), "shards": shards}


def main():
    from tfscale import data  # pylint: disable=import-outside-toplevel
    from tfscale.data import array_record, prepare_corpus  # pylint: disable=import-outside-toplevel
    from tfscale.errors import ConfigError  # pylint: disable=import-outside-toplevel

    f, out = flags.FLAGS, flags.FLAGS.workdir
    if f.verify:
        array_record.check_folder(out, "to verify")
        print(f"{out}: {array_record.verify(out)} files match their manifest")
        return
    if f.shards < 1:
        raise ConfigError(f"--shards must be >= 1, got {f.shards}")
    if bool(f.config) == bool(f.files):
        raise ConfigError("give one of --config (a config's data set) or --files (a directory of text files)")
    if f.files:
        manifest = prepare_corpus.prepare(f.files, out, f.seq_len, f.tokenizer, f.vocab_size, f.model_type,
                                          f.validation_share, f.shards, tuple(f.suffixes), tuple(f.skip_folders))
        keys = ("name", "task", "tokenizer", "counts", "bytes_per_token", "splits")
    else:
        config = f.config
        if config.data.name == "array_record":
            raise ConfigError("the config's data is already an ArrayRecord folder (data.path)")
        data.check_name(config.data)
        with array_record.preparing(out, config_settings(config, f.shards)):
            source = data.load(config.data, config.model.get("seq_len"))
            manifest = array_record.write(out, source, f.shards,
                                          description={"data": json.loads(config.data.to_json()),
                                                       "seq_len": config.model.get("seq_len")})
        keys = ("name", "task", "inputs", "labels", "splits")
    print(json.dumps({k: manifest[k] for k in keys}, indent=2))


if __name__ == "__main__":
    cli.run(main)
