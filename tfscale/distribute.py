"""The `tf.distribute` strategy for a config: one config runs unchanged on CPU, GPUs and TPUs.

`auto` picks, in order: a reachable TPU, several GPUs (MirroredStrategy), a multi-worker cluster
described by TF_CONFIG (MultiWorkerMirroredStrategy), else one device. `distribute.cpu_devices=N`
splits the host CPU into N logical devices, so replicas can be simulated on any machine.
"""
import glob
import json
import os

from absl import logging
import tensorflow as tf

from tfscale.errors import ConfigError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def split_cpu(num_devices):
    """Splits the CPU into `num_devices` logical devices; must run before TensorFlow starts.

    Once the runtime is up the split cannot change, so asking for no more devices than there
    already are is accepted (the first `num_devices` are used) and asking for more is an error.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < num_devices:
            raise ConfigError(
                f"distribute.cpu_devices={num_devices} but TensorFlow already started with "
                f"{have} logical CPU devices; set it before anything runs in this process"
            ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")[:num_devices]]


def tpu_hint():
    """Why we believe a TPU is reachable, or None. Cheap: no network, no metadata server."""
    if os.environ.get("TPU_NAME"):
        return f"TPU_NAME={os.environ['TPU_NAME']}"
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return "local TPU devices (/dev/accel*)"
    return None


def tpu_address(setting):
    """The `tpu` argument of `TPUClusterResolver` for config value `distribute.tpu`.

    `local` (or empty): the TPU chips of this Cloud TPU VM; but with `TPU_NAME` set (a pod slice,
    driven from its first host), that TPU, so that the resolver finds every host of the slice
    through the Cloud TPU API. Anything else is a TPU name or a `grpc://` address, used as given.
    Raises ConfigError (one line) when `local` is asked for where there is no TPU.
    """
    if setting not in ("", "local"):
        return setting
    if os.environ.get("TPU_NAME"):
        return os.environ["TPU_NAME"]
    if tpu_hint():
        return "local"
    raise ConfigError(
        "distribute.strategy=tpu but no TPU is reachable: TPU_NAME is not set and there are no "
        "/dev/accel* devices (run on a Cloud TPU VM, or set distribute.tpu=NAME)")


def _tpu_strategy(setting):
    """Resolves the TPU, connects to it, initialises the TPU system and returns a TPUStrategy.

    Only the ConfigError path runs without a TPU; the rest is TensorFlow's documented sequence
    for Cloud TPU VMs (resolver -> connect_to_cluster -> initialize_tpu_system -> TPUStrategy).
    """
    address = tpu_address(setting)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":  # a pod slice or a remote TPU: the hosts form a cluster
            tf.config.experimental_connect_to_cluster(resolver)
        topology = tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise ConfigError(f"distribute.strategy=tpu: cannot reach TPU {address!r}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    logging.info("TPU %s: %d cores on %d hosts", address, topology.num_tpus_per_task * topology.num_tasks,
                 topology.num_tasks)
    return tf.distribute.TPUStrategy(resolver)


def _multi_worker_strategy():
    if "TF_CONFIG" not in os.environ:
        raise ConfigError(
            "distribute.strategy=multi_worker needs TF_CONFIG describing the cluster "
            '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}})')
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def _local_devices(cpu_devices):
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if gpus:
        return gpus
    if cpu_devices:
        return split_cpu(cpu_devices)
    return [tf.config.list_logical_devices("CPU")[0].name]


def build_strategy(dist):
    """Returns the strategy for the `distribute` section of a config.

    Raises ConfigError (one line for the user) when the named strategy cannot run here.
    """
    name = dist.strategy
    if name not in STRATEGIES:
        raise ConfigError(f"unknown distribute.strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if dist.cpu_devices:
        split_cpu(dist.cpu_devices)  # before anything below starts the runtime
    if name == "auto":
        if dist.tpu not in ("", "local") or tpu_hint():
            name = "tpu"
        elif len(tf.config.list_physical_devices("GPU")) > 1 or dist.cpu_devices > 1:
            name = "mirrored"
        elif "TF_CONFIG" in os.environ:
            name = "multi_worker"
        else:
            name = "one_device"
        logging.info("distribute.strategy=auto chose %s", name)
    if name == "tpu":
        return _tpu_strategy(dist.tpu)
    if name == "multi_worker":
        return _multi_worker_strategy()
    devices = _local_devices(dist.cpu_devices)
    if name == "mirrored":
        cross_device_ops = None if "GPU" in devices[0] else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
    return tf.distribute.OneDeviceStrategy(devices[0])


def device_kind(strategy):
    """'TPU', 'GPU' or 'CPU': the kind of device the replicas of `strategy` run on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "TPU"
    devices = strategy.extended.worker_devices
    return "GPU" if any("GPU" in d.upper() for d in devices) else "CPU"


def strategy_name(strategy):
    """The config name of a strategy object, for summaries."""
    return {
        tf.distribute.TPUStrategy: "tpu",
        tf.distribute.MultiWorkerMirroredStrategy: "multi_worker",
        tf.distribute.MirroredStrategy: "mirrored",
        tf.distribute.OneDeviceStrategy: "one_device",
    }.get(type(strategy), type(strategy).__name__)
