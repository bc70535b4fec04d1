"""Fine-tuning from a pretrained run: `model.init_from = WORKDIR` loads its weights by name.

The pretrained network is rebuilt from its own config and newest checkpoint, and every layer of
the new network that it also has (same layer name) takes its weights, which must match in
number and shape. Layers it does not have start fresh, and must be named in `model.init_fresh`
(default: the encoder's head, `pooler` and `logits`): a body layer missing from the pretrained
run is a mistake, not a fresh start. Applied once, when the run starts from nothing; a resumed
run continues from its own checkpoints.
"""
from absl import logging
import tensorflow as tf

from tfscale import checkpoint, io, values, workdir as workdir_lib
from tfscale.errors import ConfigError

def check(config):
    """A ConfigError before anything is written when `model.init_from` is not a trained run."""
    source = config.model.get("init_from")
    if not source:
        return
    workdir_lib.load_config(source)
    if not checkpoint.checkpoint_paths(io.join(source, "checkpoints")):
        raise ConfigError(f"model.init_from: {source} has no checkpoints to load")


def _pretrained(config):
    from tfscale import data, models  # pylint: disable=import-outside-toplevel
    source = config.model.init_from
    pretrained_config = workdir_lib.load_config(source)
    info = data.load(pretrained_config.data, pretrained_config.model.get("seq_len"), pretrained_config.seed).info
    with tf.device("/cpu:0"):
        network = models.build(pretrained_config.model, info)
    path = checkpoint.checkpoint_paths(io.join(source, "checkpoints"))[-1]
    tf.train.Checkpoint(network=network).read(path).expect_partial()
    return network, path


def load(network, config):
    """Copies the pretrained run's weights into `network` by layer name; returns what it did."""
    pretrained, path = _pretrained(config)
    fresh_allowed = set(values.names(config.model.get("init_fresh", "pooler,logits")))
    by_name = {l.name: l for l in pretrained.layers}
    loaded, fresh = [], []
    for layer in network.layers:
        if not layer.weights:
            continue
        source = by_name.get(layer.name)
        if source is None:
            if layer.name not in fresh_allowed:
                raise ConfigError(f"model.init_from: {config.model.init_from} has no layer {layer.name} "
                                  f"(name it in model.init_fresh to start it fresh)")
            fresh.append(layer.name)
            continue
        mine, theirs = layer.get_weights(), source.get_weights()
        shapes = [w.shape for w in mine], [w.shape for w in theirs]
        if shapes[0] != shapes[1]:
            raise ConfigError(f"model.init_from: layer {layer.name} has weights {shapes[0]} here and "
                              f"{shapes[1]} in {config.model.init_from}")
        layer.set_weights(theirs)
        loaded.append(layer.name)
    logging.info("model.init_from: %d layers loaded from %s, fresh: %s", len(loaded), path, ", ".join(fresh) or "none")
    return {"source": path, "loaded": loaded, "fresh": fresh}
