"""What a person would try first on a text-classification task: a bag-of-bytes logistic regression.

Each window becomes its 256 byte frequencies; scikit-learn's multinomial logistic regression
(L-BFGS) is fitted on the training split and scored on the held-out split, so the models'
accuracy and macro F1 have a floor to beat.
"""
import time

import numpy as np
from sklearn import linear_model, metrics


def byte_histograms(tokens):
    """[n, T] byte ids -> [n, 256] frequencies."""
    tokens = np.asarray(tokens, np.int64)
    counts = np.zeros((len(tokens), 256), np.float64)
    np.add.at(counts, (np.repeat(np.arange(len(tokens)), tokens.shape[1]), tokens.ravel()), 1.0)
    return counts / tokens.shape[1]


def bag_of_bytes(source, c=10.0, seed=0):
    """{accuracy, macro_f1, num_params, seconds} of the baseline on `source`'s held-out split."""
    t0 = time.time()
    x_train, y_train = source.read("train", np.arange(source.info.num_train))
    x_eval, y_eval = source.eval_arrays()
    model = linear_model.LogisticRegression(C=c, max_iter=2000, random_state=seed)
    model.fit(byte_histograms(x_train), y_train)
    predicted = model.predict(byte_histograms(x_eval))
    return {"accuracy": float(metrics.accuracy_score(y_eval, predicted)),
            "macro_f1": float(metrics.f1_score(y_eval, predicted, average="macro")),
            "num_params": int(model.coef_.size + model.intercept_.size),
            "seconds": time.time() - t0}
