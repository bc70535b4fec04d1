"""Small convolutional network: `depth` blocks of 3x3 conv + ReLU (+ 2x2 max-pool while the
image is large enough), filters doubling per block, then a dense layer of `width` units.

Flat inputs whose length is a square (digits: 64 = 8x8) are reshaped to one-channel images.
"""
import math

import tf_keras as keras

from tfscale.errors import ConfigError
from tfscale.models import classifier_parts, knobs


def _image_shape(shape):
    if len(shape) == 3:
        return tuple(shape)
    if len(shape) == 2:
        return (*shape, 1)
    side = math.isqrt(shape[0])
    if len(shape) == 1 and side * side == shape[0]:
        return (side, side, 1)
    raise ConfigError(f"model cnn needs image inputs; got input shape {tuple(shape)}")


def build(info, filters=32, depth=2, width=128, dropout=0.0):
    knobs.at_least(1, filters=filters, width=width)
    knobs.at_least(0, depth=depth)
    knobs.dropout(dropout)
    inputs, x = classifier_parts.rescaled_inputs(info)
    x = keras.layers.Reshape(_image_shape(info.input_shape))(x)
    for i in range(depth):
        x = keras.layers.Conv2D(filters * 2**i, 3, padding="same", activation="relu",
                                name=f"conv_{i}")(x)
        if min(x.shape[1], x.shape[2]) >= 4:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(width, activation="relu", name="dense")(x)
    return classifier_parts.logits_model(inputs, x, info, dropout, "cnn")
