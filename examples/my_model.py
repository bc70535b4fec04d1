"""A model of one's own: any function `build(info, **knobs) -> tf_keras.Model` will do.

`info` is the data's `tfscale.data.DataInfo` (input shape, number of classes, input scale, task);
the knobs are the config's other `model.*` keys. Return float32 logits (a float32 last layer),
so mixed precision leaves the loss in float32. Train it with `model.name=examples.my_model:build`.
"""
import tf_keras as keras


def build(info, width=64, blocks=2, dropout=0.1):
    inputs = keras.Input(info.input_shape, name="features")
    x = keras.layers.Dense(width, activation="relu", name="stem")(inputs)
    for i in range(blocks):  # pre-norm residual blocks
        h = keras.layers.LayerNormalization(name=f"block_{i}_norm")(x)
        h = keras.layers.Dense(2 * width, activation="gelu", name=f"block_{i}_up")(h)
        h = keras.layers.Dropout(dropout)(h)
        x = x + keras.layers.Dense(width, name=f"block_{i}_down")(h)
    logits = keras.layers.Dense(info.num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="residual_mlp")
