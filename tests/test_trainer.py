"""The accumulating wrapper as a Keras model: users' own losses, metrics, callbacks, sample weights."""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfscale import trainer


def toy_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (x @ rng.normal(size=(5, 1))).astype(np.float32)
    return x, y


def network():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])


def absolute_error(y_true, y_pred):
    """A user's own per-example loss (a plain function)."""
    return tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1)


class CountUpdates(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.seen = int(self.model.optimizer.iterations)


def fit(accum_steps, sample_weight=None, loss=absolute_error):
    x, y = toy_problem()
    model = trainer.AccumulatingModel(network(), accum_steps)
    model.compile(keras.optimizers.SGD(0.05), loss=loss, metrics=[keras.metrics.MeanSquaredError(name="mse")])
    counter = CountUpdates()
    history = model.fit(x, y, sample_weight=sample_weight, batch_size=32, epochs=3, shuffle=False,
                        verbose=0, callbacks=[counter])
    return model, history.history, counter


def test_custom_loss_metric_and_callback_work_through_accumulation():
    one, h1, _ = fit(1)
    four, h4, counter = fit(4)
    assert counter.seen == 6  # 64 / 32 x 3 epochs: one update per global batch
    np.testing.assert_allclose(h1["loss"], h4["loss"], rtol=1e-6)
    np.testing.assert_allclose(h1["mse"], h4["mse"], rtol=1e-6)  # metrics cover all micro-batches
    for a, b in zip(one.network.get_weights(), four.network.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_sample_weights_are_accumulated_like_one_batch():
    weights = np.linspace(0.0, 2.0, 64).astype(np.float32)
    one, h1, _ = fit(1, weights, keras.losses.MeanSquaredError())
    four, h4, _ = fit(4, weights, keras.losses.MeanSquaredError())
    np.testing.assert_allclose(h1["loss"], h4["loss"], rtol=1e-6)
    for a, b in zip(one.network.get_weights(), four.network.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_evaluate_and_predict_behave_like_the_inner_network():
    model, _, _ = fit(2, loss=keras.losses.MeanSquaredError())
    x, y = toy_problem(1)
    np.testing.assert_allclose(model.predict(x, verbose=0), model.network.predict(x, verbose=0), rtol=1e-6)
    results = model.evaluate(x, y, verbose=0, return_dict=True)
    expected = float(np.mean((model.network.predict(x, verbose=0) - y) ** 2))
    assert abs(results["loss"] - expected) < 1e-5 and abs(results["mse"] - expected) < 1e-5
