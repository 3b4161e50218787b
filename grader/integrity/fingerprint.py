"""The fingerprint of a model's predictions, and how alike two fingerprints are (numpy only).

Independently trained models all approach the same answers, so their raw predictions agree
closely; what tells a copy apart is that it makes the *same mistakes*. A fingerprint is
therefore built from the errors (prediction minus truth; for classification, softmax minus
one-hot) on a fixed subset of the hidden test set, compressed by a signed hashing sketch
(each error value added, with a fixed random sign, into one of SKETCH_DIM buckets), which keeps
inner products on average and makes every fingerprint the same small size whatever the kind:
SKETCH_DIM float16 values (1 KiB), plus its length.

Similarity of errors a and b: 2·a·b / (|a|² + |b|²) = 1 − |a − b|² / (|a|² + |b|²).
It is 1 for identical predictions, about the correlation of the errors for two models of
similar quality, and lower when one is much better than the other.
"""

from __future__ import annotations

import numpy as np

# How many test images the fingerprint looks at (all when the set is smaller), chosen
# deterministically so every submission on one test-set version uses the same ones.
SUBSET_IMAGES = 512
SKETCH_DIM = 512
_SEED = 20_261_129


def subset_indices(n_images: int) -> np.ndarray:
    rng = np.random.default_rng([_SEED, n_images])
    return np.sort(rng.permutation(n_images)[: min(n_images, SUBSET_IMAGES)])


def errors(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image, what the model got wrong that a model of its quality need not: float64
    (N, values).

    The raw error (prediction minus truth; for classification softmax minus one-hot) has a
    part every weak model shares: a bias, and shrinkage towards the average answer (a model
    that predicts the mean face errs by exactly minus the centred truth). Per output value,
    the mean error and the error's projection on the centred truth are removed; what is left
    is the model's own mistakes, which only a copy repeats. A model whose predictions do not
    depend on its input keeps nothing, and is never similar to anything.
    """
    pred = np.asarray(predictions, dtype=np.float64).reshape(len(predictions), -1)
    truth = np.asarray(labels)
    if truth.size == pred.size:  # regression: labels have the predictions' shape
        target = truth.astype(np.float64).reshape(pred.shape)
        error = pred - target
    else:  # classification: labels are class indices, predictions logits
        shifted = np.exp(pred - pred.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        target = np.zeros_like(probabilities)
        target[np.arange(len(pred)), truth.astype(np.int64).reshape(-1)] = 1.0
        error = probabilities - target
    error = error - error.mean(axis=0)
    centred = target - target.mean(axis=0)
    power = (centred * centred).sum(axis=0)
    beta = np.divide((error * centred).sum(axis=0), power, out=np.zeros_like(power),
                     where=power > 0)
    return error - beta * centred


def sketch(predictions: np.ndarray, labels: np.ndarray) -> tuple[bytes, float]:
    """(float16 unit vector as bytes, its length before normalising)."""
    chosen = subset_indices(len(labels))
    flat = errors(np.asarray(predictions)[chosen], np.asarray(labels)[chosen]).reshape(-1)
    rng = np.random.default_rng([_SEED, flat.size])
    buckets = rng.integers(0, SKETCH_DIM, flat.size)
    signs = rng.choice(np.array([-1.0, 1.0]), flat.size)
    vector = np.bincount(buckets, weights=flat * signs, minlength=SKETCH_DIM)
    norm = float(np.linalg.norm(vector))
    unit = vector / norm if norm > 0 else vector
    return unit.astype(np.float16).tobytes(), norm


def unpack(blobs: list[bytes]) -> np.ndarray:
    """Stack stored sketches into a float32 matrix (rows in the order given)."""
    if not blobs:
        return np.zeros((0, SKETCH_DIM), dtype=np.float32)
    units = np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1).astype(
        np.float32
    )
    # Renormalised after the float16 rounding, so identical predictions give exactly 1.
    lengths = np.linalg.norm(units, axis=1, keepdims=True)
    return np.divide(units, lengths, out=np.zeros_like(units), where=lengths > 0)


def similarities(
    unit: np.ndarray, norm: float, units: np.ndarray, norms: np.ndarray
) -> np.ndarray:
    """Similarity of one fingerprint with each row of `units` (see the module docstring)."""
    cosine = units @ unit.astype(np.float32)
    norms = np.asarray(norms, dtype=np.float64)
    denominator = norm * norm + norms * norms
    scale = np.divide(2.0 * norm * norms, denominator, out=np.ones_like(norms),
                      where=denominator > 0)
    return np.clip(cosine.astype(np.float64) * scale, -1.0, 1.0)


def similarity_matrix(units: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """All pairs at once (for a rescan): (n, n)."""
    cosine = (units @ units.T).astype(np.float64)
    norms = np.asarray(norms, dtype=np.float64)
    denominator = norms[:, None] ** 2 + norms[None, :] ** 2
    product = 2.0 * norms[:, None] * norms[None, :]
    scale = np.divide(product, denominator, out=np.ones_like(denominator),
                      where=denominator > 0)
    return np.clip(cosine * scale, -1.0, 1.0)
