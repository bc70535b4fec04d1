"""Multi-layer perceptron: `depth` hidden ReLU layers of `width` units."""
import tf_keras as keras


def build(info, width=256, depth=2, dropout=0.0):
    inputs = keras.Input(info.input_shape, dtype="float32", name="inputs")
    x = keras.layers.Rescaling(info.input_scale, name="rescale")(inputs)
    x = keras.layers.Flatten()(x)
    for i in range(depth):
        x = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    logits = keras.layers.Dense(info.num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="mlp")
