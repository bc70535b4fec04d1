"""Test set-up: Keras 2, and the CPU split into 4 logical devices once per test process."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfscale  # noqa: E402,F401  (selects Keras 2 before TensorFlow loads)
from tfscale import distribute  # noqa: E402

NUM_TEST_DEVICES = 4
distribute.split_cpu(NUM_TEST_DEVICES)
