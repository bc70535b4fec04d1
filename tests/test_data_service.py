"""`data.service`: the input pipeline run by a tf.data service gives the batches and weights of
the same run without it."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
import tfscale
from tfscale import config as config_lib, data
from tfscale.data import service
from test_resume import final_weights, max_difference


@pytest.fixture(scope="module")
def dispatcher():
    """An in-process dispatcher with one worker, as `docs` describe starting them on a cluster."""
    server = tf.data.experimental.service.DispatchServer()
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=server.target.split("://")[1]))
    yield server.target
    worker._stop()  # pylint: disable=protected-access
    server._stop()  # pylint: disable=protected-access


def test_served_batches_are_the_local_ones_in_order(dispatcher):
    source = data.load(tiny_config().data)
    local = source.train_dataset_fn(32, seed=4, start_step=3, num_steps=40)
    served = service.distribute(local, dispatcher, "test")
    for pipeline in (0, 1):  # each host's own job
        ctx = tf.distribute.InputContext(2, pipeline, 2)
        a = [y.numpy() for _, y in local(ctx)]
        b = [y.numpy() for _, y in served(ctx)]
        assert len(a) == len(b) == 37 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_training_through_the_service_gives_the_weights_of_local_input(dispatcher, tmp_path):
    common = dict(train__num_steps=30, export__saved_model=False, deterministic=True, train__accum_steps=2)
    tfscale.train(tiny_config(**common), str(tmp_path / "local"))
    summary = tfscale.train(tiny_config(data__service=dispatcher, **common), str(tmp_path / "served"))
    assert summary["steps"] == 30
    assert max_difference(final_weights(str(tmp_path / "local")), final_weights(str(tmp_path / "served"))) <= 1e-6


@pytest.mark.parametrize("overrides,fragment", [
    (dict(data__name="array_record", data__path="/nowhere", data__service="grpc://localhost:5000"),
     "data.service cannot serve data.name array_record"),
    (dict(data__service="http://localhost:5000"), "give the dispatcher as grpc://HOST:PORT"),
])
def test_a_pipeline_the_service_cannot_run_is_refused_before_training(overrides, fragment):
    with pytest.raises(tfscale.ConfigError, match=fragment):
        config_lib.validate(tiny_config(**overrides))
