"""WSD: the schedule by hand, branches that equal unbroken runs, kept checkpoints, bad init_from."""
import glob
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_command, tiny_config
from tfscale import branch, optim
from tfscale.config import ConfigError, validate
from tfscale.training import Run


def lrs(steps, total=100, warmup=10, cooldown=20, shape="1-sqrt", end=0.1, name="wsd"):
    c = tiny_config(schedule__name=name, schedule__warmup_steps=warmup, schedule__end_factor=end,
                    schedule__cooldown_steps=cooldown, schedule__cooldown_shape=shape,
                    train__num_steps=total, optimizer__learning_rate=1.0)
    return optim.build_schedule(c.optimizer, c.schedule, total)(tf.constant(steps, tf.float32)).numpy()


def test_wsd_warms_up_stays_then_cools_down_to_its_end_on_the_last_update():
    # 100 updates: warmup 0..9, constant 10..79, cooldown 80..99 (the k-th uses 1 - sqrt(k/20)).
    got = lrs([0, 9, 10, 79, 80, 89, 99, 150])
    want = [0.1, 1, 1, 1, 0.1 + 0.9 * (1 - 0.05 ** 0.5), 0.1 + 0.9 * (1 - 0.5 ** 0.5), 0.1, 0.1]
    assert got == pytest.approx(want, rel=1e-6)
    assert lrs([80, 89, 99], shape="linear") == pytest.approx([0.1 + 0.9 * 0.95, 0.55, 0.1], rel=1e-6)
    assert lrs([99], cooldown=1, end=0.0) == pytest.approx([0.0])  # one cooldown update: the end


def test_wsd_before_its_cooldown_does_not_depend_on_the_run_length():
    """A constant trunk (cooldown 0) and any branch agree exactly up to the branch's cooldown."""
    steps = list(range(80))
    trunk = lrs(steps, total=60, cooldown=0)
    np.testing.assert_array_equal(trunk, lrs(steps, total=100, cooldown=20))
    np.testing.assert_array_equal(trunk, lrs(steps, total=60, name="constant", cooldown=0))


@pytest.mark.parametrize("overrides, message", [
    (dict(schedule__cooldown_steps=95), "schedule.cooldown_steps 95 must fit in train.num_steps 100 after "
                                        "schedule.warmup_steps 10"),
    (dict(schedule__cooldown_steps=-1), "schedule.cooldown_steps must be >= 0, got -1"),
    (dict(schedule__name="warmup_cosine", schedule__cooldown_steps=5), "is for schedule wsd only"),
    (dict(schedule__cooldown_shape="cosine"), "unknown schedule.cooldown_shape 'cosine'"),
    (dict(train__init_from="runs/trunk"), "must be WORKDIR_OR_CHECKPOINT@STEP"),
    (dict(train__init_from="runs/trunk@x"), "must be WORKDIR_OR_CHECKPOINT@STEP"),
    (dict(train__init_from="runs/trunk@100"), "starts at update 100, not before train.num_steps 100"),
    (dict(checkpoint__keep_steps=(0,)), "checkpoint.keep_steps 0 must be between 1 and train.num_steps 100"),
    (dict(checkpoint__keep_steps=(30,), train__steps_per_execution=4), "not a multiple of train.steps_per_execution 4"),
])
def test_bad_wsd_keys_are_one_line_errors(overrides, message):
    config = tiny_config(**{"schedule__name": "wsd", "schedule__warmup_steps": 10, "train__num_steps": 100,
                            **overrides})
    with pytest.raises(ConfigError) as e:
        validate(config)
    assert message in str(e.value) and "\n" not in str(e.value)


WSD = dict(schedule__name="wsd", schedule__warmup_steps=4, schedule__end_factor=0.1,
           deterministic=True, export__saved_model=False, model__dropout=0.0)


def wsd_config(num_steps, cooldown, **overrides):
    return tiny_config(**{**WSD, "train__num_steps": num_steps, "schedule__cooldown_steps": cooldown,
                          **overrides})


def weights(run):
    return [v.numpy() for v in run.network.weights]


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    """A constant run to update 24, keeping update 20 while rotation keeps only the newest."""
    workdir = str(tmp_path_factory.mktemp("trunk"))
    with Run(wsd_config(24, 0, checkpoint__every_steps=5, checkpoint__keep=1,
                        checkpoint__keep_steps=(20,)), workdir) as run:
        run.fit()
    return workdir


def test_kept_checkpoints_survive_rotation(trunk):
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(trunk, "checkpoints", "**", "*.index"),
                                                          recursive=True))
    assert names == ["ckpt-20.index", "ckpt-24.index"]
    assert os.path.exists(os.path.join(trunk, "checkpoints", "keep", "ckpt-20.index"))
    assert tf.train.latest_checkpoint(os.path.join(trunk, "checkpoints")).endswith("ckpt-24")


def test_a_cooldown_branched_from_the_trunk_equals_the_unbroken_run(trunk, tmp_path):
    with Run(wsd_config(30, 10), str(tmp_path / "straight")) as run:
        run.fit()
        straight = weights(run)
    with Run(wsd_config(30, 10, train__init_from=f"{trunk}@20"), str(tmp_path / "branch")) as run:
        run.fit()
        assert run.step == 30
        branched = weights(run)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(straight, branched)) <= 1e-6
    # Resumed, the branch trains on from its own checkpoint, not from the trunk's again.
    with Run(wsd_config(30, 10, train__init_from=f"{trunk}@20"), str(tmp_path / "branch")) as run:
        run.fit()
        np.testing.assert_array_equal(weights(run)[0], branched[0])


def _corrupt(prefix):
    data = glob.glob(prefix + ".data-*")[0]
    with open(data, "r+b") as f:
        f.seek(os.path.getsize(data) // 2)
        f.write(b"\xff" * 64)


def test_bad_init_from_is_one_line_error_and_writes_nothing(trunk, tmp_path):
    damaged = str(tmp_path / "damaged")
    subprocess.run(["cp", "-r", trunk, damaged], check=True)
    _corrupt(os.path.join(damaged, "checkpoints", "keep", "ckpt-20"))
    ckpt24 = os.path.join(trunk, "checkpoints", "ckpt-24")
    cases = [
        (wsd_config(30, 10, train__init_from=f"{tmp_path}/nope@20"), "does not exist"),
        (wsd_config(30, 10, train__init_from=f"{trunk}@15"), "has no checkpoint at update 15"),
        (wsd_config(30, 10, train__init_from=f"{damaged}@20"), "cannot read checkpoint"),
        (wsd_config(30, 6, train__init_from=f"{ckpt24}@20"), "is at update 24, not 20"),
        (wsd_config(30, 10, train__init_from=f"{trunk}@20", seed=1), "different config (seed: 0 -> 1)"),
        (wsd_config(30, 0, train__init_from=f"{trunk}@20", schedule__name="warmup_cosine"),
         "update 4 uses learning rate"),
    ]
    for config, message in cases:
        workdir = str(tmp_path / "branch")
        with pytest.raises(ConfigError) as e:
            Run(config, workdir)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
        assert not os.path.exists(workdir)


def test_bad_init_from_on_the_command_line(tmp_path):
    workdir = str(tmp_path / "branch")
    proc = run_command("train", [f"--workdir={workdir}", "--config=experiments/configs/digits_mlp.py:tiny",
                                 "--config.schedule.name=wsd", "--config.schedule.cooldown_steps=10",
                                 f"--config.train.init_from={tmp_path}@5"])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "has no checkpoint at update 5" in lines[-1]
    assert "Traceback" not in proc.stderr and not os.path.exists(workdir)


def test_plan_gives_one_trunk_and_a_branch_per_budget():
    trunk, branches = branch.plan("runs/n14k", [1000, 2000, 4000], 0.2, warmup_steps=50, multiple=8)
    assert dict(trunk) == {"schedule.name": "wsd", "schedule.warmup_steps": 50, "schedule.cooldown_steps": 0,
                           "train.num_steps": 3200, "checkpoint.keep_steps": (800, 1600, 3200)}
    assert [dict(b)["train.init_from"] for b in branches] == ["runs/n14k@800", "runs/n14k@1600", "runs/n14k@3200"]
    assert [dict(b)["schedule.cooldown_steps"] for b in branches] == [200, 400, 800]
    with pytest.raises(ConfigError, match="leaves no constant phase"):
        branch.plan("runs/x", [40], 0.2, warmup_steps=50)
