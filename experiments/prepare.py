r"""Writes a config's data set as ArrayRecord shards that runs stream by index.

  python -m experiments.prepare --config=experiments/configs/lm.py --workdir=/data/pycode_128 \
      [--shards=16]

Both splits, exactly as the config's own data set gives them (text: windows of the config's
`model.seq_len`), with `manifest.json` (counts, bytes, dtypes, shapes, SHA-256 per shard, the
data config it came from). Re-running the command keeps complete shards. Train from it with
`--config.data.name=array_record --config.data.path=/data/pycode_128`.
"""
import json

from absl import flags

from experiments import cli

cli.define_config_and_workdir("experiments/configs/digits_mlp.py[:tiny]", "Folder to write the shards and manifest to.")
flags.DEFINE_integer("shards", 4, "Shards per split (more lets many hosts read in parallel).")
flags.DEFINE_bool("verify", False, "Only check the folder: every shard's SHA-256 and record count against its manifest.")


def main():
    from tfscale import data  # pylint: disable=import-outside-toplevel
    from tfscale.data import array_record  # pylint: disable=import-outside-toplevel
    from tfscale.errors import ConfigError  # pylint: disable=import-outside-toplevel

    config, out = flags.FLAGS.config, flags.FLAGS.workdir
    if flags.FLAGS.verify:
        print(f"{out}: {array_record.verify(out)} shards match their manifest")
        return
    if flags.FLAGS.shards < 1:
        raise ConfigError(f"--shards must be >= 1, got {flags.FLAGS.shards}")
    if config.data.name == "array_record":
        raise ConfigError("the config's data is already an ArrayRecord folder (data.path)")
    data.check_name(config.data)
    source = data.load(config.data, config.model.get("seq_len"))
    manifest = array_record.write(out, source, flags.FLAGS.shards,
                                  description={"data": json.loads(config.data.to_json()),
                                               "seq_len": config.model.get("seq_len")})
    print(json.dumps({k: manifest[k] for k in ("name", "task", "inputs", "labels", "splits")}, indent=2))


if __name__ == "__main__":
    cli.run(main)
