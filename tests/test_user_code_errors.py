"""A user's own model builder or data factory that fails (when called, or already on import) is
one `error:` line naming it, the exception and the user's own file:line, followed only by the
user's frames; never a traceback through tfscale, and the workdir is left as it was."""
import os
import re
import textwrap

import pytest

from conftest import one_error_line, run_command, tiny_config
import tfscale
from tfscale import ConfigError, config as config_lib


def _module(folder, name, source):
    """Writes the user's module `name` into `folder`; returns its path."""
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source).lstrip())
    return str(path)


def test_a_builder_that_raises_is_one_error_line_at_the_users_line_then_only_their_frames(tmp_path, monkeypatch):
    path = _module(tmp_path, "user_model_raises", """
        def _check(width):
            if width < 100:
                raise ValueError(f"bad width {width}")


        def build(info, width=64, blocks=2, dropout=0.1):
            _check(width)
        """)
    workdir = tmp_path / "run"
    monkeypatch.syspath_prepend(str(tmp_path))  # as PYTHONPATH would
    proc = run_command("train", ["--config=examples/my_config.py", f"--workdir={workdir}",
                                 "--config.model.name=user_model_raises:build",
                                 "--config.data.name=examples.my_data:load"])
    line = one_error_line(proc)
    assert line == (f"error: model 'user_model_raises:build' raised ValueError: bad width 64 ({path}:3)")
    after = proc.stderr[proc.stderr.index(line) + len(line):]
    assert after.startswith("\nyour code (most recent call last):\n")
    assert re.findall(r'File "(.+)", line (\d+)', after) == [(path, "7"), (path, "3")]  # no tfscale frame
    assert not workdir.exists()


def test_a_data_factory_that_raises_names_its_line_and_writes_nothing(tmp_path, monkeypatch):
    path = _module(tmp_path, "user_data_raises", """
        import numpy as np
        from tfscale import ConfigError


        def load(data_config, seq_len):
            return np.zeros(3)[data_config.name]


        def refuse(data_config, seq_len):
            raise ConfigError("user_data_raises needs data.path")
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError) as error:
        tfscale.train(tiny_config(data__name="user_data_raises:load"), str(workdir))
    message = str(error.value)
    assert message.startswith("data 'user_data_raises:load' raised IndexError: only integers")
    assert message.endswith(f"({path}:6)") and "\n" not in message
    assert _frames(error.value) == [(path, "6")]
    assert not workdir.exists()
    with pytest.raises(ConfigError) as error:  # a deliberate ConfigError of the user's is theirs to word
        tfscale.train(tiny_config(data__name="user_data_raises:refuse"), str(workdir))
    assert str(error.value) == "user_data_raises needs data.path" and not _frames(error.value)


@pytest.mark.parametrize("kind,source,expected,line", [
    ("syntax", "x = 1\ndef build(info:\n    pass\n",
     "importing {module} raised SyntaxError: '(' was never closed", 2),
    ("name", "import os\n\nWIDTH = widht\n\ndef build(info):\n    pass\n",
     "importing {module} raised NameError: name 'widht' is not defined", 3),
    ("imports", "import os\nimport not_a_package_tfscale_knows\n",
     "importing {module} raised ModuleNotFoundError: No module named 'not_a_package_tfscale_knows'", 2),
])
def test_a_module_that_fails_on_import_names_its_file_and_line(tmp_path, monkeypatch, kind, source, expected, line):
    module = f"user_model_{kind}"
    path = tmp_path / f"{module}.py"
    path.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    for section in ("model", "data"):
        with pytest.raises(ConfigError) as error:
            config_lib.validate(tiny_config(**{f"{section}__name": f"{module}:build"}))
        assert str(error.value) == (f"{section} '{module}:build': " + expected.format(module=module)
                                    + f" ({path}:{line})")
        assert _frames(error.value) == [(str(path), str(line))]


def _frames(error):
    """(file, line) of each user frame the command prints after the error line."""
    return re.findall(r'File "(.+)", line (\d+)', getattr(error, "user_frames", ""))
