"""`digits`: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes) as a tfds data set.

The images ship inside scikit-learn, so the data set is prepared offline into the tfds data dir
on first use. The train/test split is fixed (stratified, 360 test images, random_state 0) and the
same everywhere. Pixels are raw integers 0..16, kept as uint8 images like MNIST's.
"""
import numpy as np
import tensorflow_datasets as tfds

NUM_TEST = 360


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's handwritten digits (UCI optical recognition of handwritten digits)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Fixed stratified split: 1,437 train, 360 test."}

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        from sklearn import datasets, model_selection  # pylint: disable=import-outside-toplevel

        digits = datasets.load_digits()
        images = digits.images.astype(np.uint8)[..., None]
        train, test = model_selection.train_test_split(
            np.arange(len(images)), test_size=NUM_TEST, random_state=0, stratify=digits.target)
        return {
            "train": self._generate_examples(images, digits.target, train),
            "test": self._generate_examples(images, digits.target, test),
        }

    def _generate_examples(self, images, labels, indices):
        for i in sorted(indices):
            yield int(i), {"image": images[i], "label": int(labels[i])}
