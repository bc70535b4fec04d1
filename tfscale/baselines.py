"""What a person would try first on a text-classification task: a bag-of-bytes logistic regression.

Each window becomes its 256 byte frequencies, standardised (zero mean, unit variance per byte
on the training split: unscaled, the frequencies are so small that L-BFGS stops far from the
optimum, 0.282 accuracy after 70 s against 0.328 in seconds); scikit-learn's multinomial
logistic regression (L-BFGS, its default C = 1) is fitted on the training split and scored on
the held-out split, so the models' accuracy and macro F1 have a floor to beat. Its size is its
float32 weights; its latency one window's histogram and prediction in scikit-learn (median of
`latency_runs`), the cost of classifying a window one at a time, as the models' batch-1
latency is.
"""
import time

import numpy as np
from sklearn import linear_model, metrics, pipeline, preprocessing


def byte_histograms(tokens):
    """[n, T] byte ids -> [n, 256] frequencies."""
    tokens = np.asarray(tokens, np.int64)
    counts = np.zeros((len(tokens), 256), np.float64)
    np.add.at(counts, (np.repeat(np.arange(len(tokens)), tokens.shape[1]), tokens.ravel()), 1.0)
    return counts / tokens.shape[1]


def latency_ms(model, window, runs=200):
    """Median milliseconds of one window's histogram and prediction."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.predict(byte_histograms(window[None]))
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def bag_of_bytes(source, c=1.0, seed=0, latency_runs=200, train_examples=0):
    """{accuracy, macro_f1, num_params, size_bytes, latency_ms, seconds} of the baseline on
    `source`'s held-out split, fitted on `train_examples` evenly spaced training windows (0: all)."""
    t0 = time.time()
    n = source.info.num_train
    take = np.arange(n) if not train_examples or train_examples >= n else \
        np.linspace(0, n - 1, train_examples).round().astype(np.int64)
    x_train, y_train = source.read("train", take)
    x_eval, y_eval = source.eval_arrays()
    model = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                   linear_model.LogisticRegression(C=c, max_iter=2000, random_state=seed))
    model.fit(byte_histograms(x_train), y_train)
    linear = model[-1]
    predicted = model.predict(byte_histograms(x_eval))
    num_params = int(linear.coef_.size + linear.intercept_.size)  # the scaler folds into them
    return {"accuracy": float(metrics.accuracy_score(y_eval, predicted)),
            "macro_f1": float(metrics.f1_score(y_eval, predicted, average="macro")),
            "num_params": num_params,
            "size_bytes": 4 * num_params,
            "latency_ms": latency_ms(model, x_eval[0], latency_runs),
            "seconds": time.time() - t0}
