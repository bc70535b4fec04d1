"""The two ends every classifier of the registry shares: raw inputs rescaled as the data says,
and float32 logits over the classes (after optional dropout), whatever the precision policy."""
import tf_keras as keras


def rescaled_inputs(info):
    """(the model's input, that input times `info.input_scale`)."""
    inputs = keras.Input(info.input_shape, dtype="float32", name="inputs")
    return inputs, keras.layers.Rescaling(info.input_scale, name="rescale")(inputs)


def logits_model(inputs, features, info, dropout, name):
    """The model from `inputs` to float32 logits over `info.num_classes` on top of `features`."""
    if dropout:
        features = keras.layers.Dropout(dropout)(features)
    logits = keras.layers.Dense(info.num_classes, dtype="float32", name="logits")(features)
    return keras.Model(inputs, logits, name=name)
