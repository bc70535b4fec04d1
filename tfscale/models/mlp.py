"""Multi-layer perceptron: `depth` hidden ReLU layers of `width` units."""
import tf_keras as keras

from tfscale.models import knobs


def build(info, width=256, depth=2, dropout=0.0):
    knobs.at_least(1, width=width)
    knobs.at_least(0, depth=depth)
    knobs.dropout(dropout)
    inputs = keras.Input(info.input_shape, dtype="float32", name="inputs")
    x = keras.layers.Rescaling(info.input_scale, name="rescale")(inputs)
    x = keras.layers.Flatten()(x)
    for i in range(depth):
        x = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    logits = keras.layers.Dense(info.num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="mlp")
