"""`data.service`: the training input pipeline run by a tf.data service instead of on the host.

When one host's CPUs cannot feed its accelerators, TensorFlow's own distributed input
processing (`tf.data.experimental.service`) runs the pipeline on other machines: a dispatcher
(`DispatchServer`) hands the pipeline's graph to its workers (`WorkerServer`), and the trainer
reads the finished batches over gRPC. Each input pipeline (host) gets a job of its own, with no
sharding (`ShardingPolicy.OFF`): the job's worker runs that host's whole pipeline, so the batches
are exactly those the host would have made, in order — the training order stays the pure
function of (seed, step), and resume and replica equivalence hold as without the service.

What that asks of the cluster: one tf.data worker per job. A dispatcher with several workers
would have each of them produce the job's whole stream (every batch more than once), so run one
dispatcher and one worker for each input pipeline (README, "Several machines"). The pipeline's
graph must run on the worker: data read in Python (`array_record`, `site_packages`: the
ArrayRecord reader is a Python function) cannot be served; in-memory data sets and `tfrecord`
files the worker can reach (`gs://`) can.
"""
import uuid

import tensorflow as tf

from tfscale.errors import ConfigError

PYTHON_READERS = ("array_record", "site_packages")


def check(data_config):
    """Refuses a data set whose pipeline a tf.data worker cannot run."""
    address = data_config.get("service", "")
    if not address:
        return
    if not str(address).startswith(("grpc://", "grpc+local://")) and "://" in str(address):
        raise ConfigError(f"data.service {address!r}: give the dispatcher as grpc://HOST:PORT")
    if data_config.name in PYTHON_READERS:
        raise ConfigError(f"data.service cannot serve data.name {data_config.name}: its reader runs in Python, "
                          "which a tf.data worker cannot run; use tfrecord files or an in-memory data set")


def distribute(dataset_fn, address, run_name):
    """`dataset_fn` with its datasets produced by the tf.data service at `address`: one job per
    input pipeline, named after the run and a fresh token (a resumed run never joins the job of
    the process before it, which has moved on)."""
    token = uuid.uuid4().hex[:12]
    service = address if "://" in address else f"grpc://{address}"

    def fn(ctx=None):
        ctx = ctx or tf.distribute.InputContext()
        dataset = dataset_fn(ctx)
        return dataset.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.OFF, service=service,
            job_name=f"{run_name}-{token}-pipeline{ctx.input_pipeline_id}-of-{ctx.num_input_pipelines}"))

    return fn
