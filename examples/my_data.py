r"""Data of one's own, written once as ArrayRecord shards that tfscale streams by index.

  python -m examples.my_data --out=runs/my_data

Here: scikit-learn's breast-cancer measurements (569 tumours, 30 features, benign or malignant),
standardised with the training split's statistics and split 80/20 with a fixed seed. Any
(inputs, labels) numpy arrays go the same way: wrap them in `InMemorySource` and `write` them.

`load` is the same data as a `DataSource` factory, for data that needs no shards:
`--config.data.name=examples.my_data:load`.
"""
from absl import app, flags
import numpy as np
from sklearn import datasets, model_selection

import tfscale  # noqa: F401  (Keras 2 before TensorFlow)
from tfscale.data import DataInfo, InMemorySource, array_record

flags.DEFINE_string("out", "runs/my_data", "Folder to write the shards and manifest to.")


def source():
    x, y = datasets.load_breast_cancer(return_X_y=True)
    x_train, x_eval, y_train, y_eval = model_selection.train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y)
    mean, std = x_train.mean(0), x_train.std(0)
    x_train, x_eval = ((a - mean) / std for a in (x_train, x_eval))
    info = DataInfo("breast_cancer", (x.shape[1],), 2, 1.0, len(y_train), len(y_eval))
    return InMemorySource(info, (x_train.astype(np.float32), y_train.astype(np.int32)),
                          (x_eval.astype(np.float32), y_eval.astype(np.int32)))


def load(data_config, seq_len):  # pylint: disable=unused-argument
    """The `data.name=examples.my_data:load` factory: (data config, model context) -> DataSource."""
    return source()


def main(_):
    manifest = array_record.write(flags.FLAGS.out, source(), shards=2, description={"source": "sklearn breast_cancer"})
    print(f"wrote {flags.FLAGS.out}: {manifest['splits']['train']['num_examples']} training and "
          f"{manifest['splits']['eval']['num_examples']} held-out examples")


if __name__ == "__main__":
    app.run(main)
