"""Multi-layer perceptron: `depth` hidden ReLU layers of `width` units."""
import tf_keras as keras

from tfscale.models import classifier_parts, knobs


def build(info, width=256, depth=2, dropout=0.0):
    knobs.at_least(1, width=width)
    knobs.at_least(0, depth=depth)
    knobs.dropout(dropout)
    inputs, x = classifier_parts.rescaled_inputs(info)
    x = keras.layers.Flatten()(x)
    for i in range(depth):
        if i and dropout:
            x = keras.layers.Dropout(dropout)(x)
        x = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(x)
    return classifier_parts.logits_model(inputs, x, info, dropout if depth else 0.0, "mlp")
