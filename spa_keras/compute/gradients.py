"""Loss gradients and Hessian-vector products of a Keras model, in TensorFlow (GradientTape; on a GPU when TensorFlow
sees one), for the gradient criteria.

`loss=` may be a Keras loss (`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`), a loss name
(`"mse"`), or any function `loss(y_true, y_pred)`; by default, the loss the model was compiled with.

Example:

>>> loss = resolve_loss("mse", model=None, criterion="taylor")
>>> loss.__name__
'mean_squared_error'
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from spa_keras.common.errors import InputError

Loss = Callable[[Any, Any], Any]  # loss(y_true, y_pred) -> a tensor


def resolve_loss(loss: Any, model: Any, criterion: str | None) -> Loss:
    """A function `(y_true, y_pred) -> loss` from `loss=` or the model's compiled loss."""
    if loss is None:
        loss = getattr(model, "loss", None)
    if loss is None:
        raise InputError(f"criterion {criterion!r} needs loss=: a Keras loss (e.g. "
                         "keras.losses.SparseCategoricalCrossentropy(from_logits=True)), a loss name ('mse') or a "
                         "function loss(y_true, y_pred); or compile the model with a loss")
    if isinstance(loss, str):
        import keras

        try:
            loss = keras.losses.get(loss)
        except ValueError as exc:
            raise InputError(f"loss={loss!r}: not a Keras loss name") from exc
    if not callable(loss):
        raise InputError(f"loss={loss!r}: give a Keras loss, a loss name or a function loss(y_true, y_pred)")
    return loss


def _loss_value(model: Any, batch: tuple[Any, Any], loss: Loss) -> Any:
    import tensorflow as tf

    x, y = batch
    return tf.reduce_mean(tf.cast(loss(y, model(x, training=False)), tf.float32))


def _dense(grads: list[Any], variables: list[Any]) -> list[Any]:
    import tensorflow as tf

    return [tf.zeros(v.shape, v.dtype) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]


def loss_gradients(model: Any, variables: list[Any], batch: tuple[Any, Any], loss: Loss) -> list[Any]:
    """∂loss/∂v for each variable, on one batch."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        value = _loss_value(model, batch, loss)
    return _dense(tape.gradient(value, variables), variables)


def hessian_vector_products(model: Any, variables: list[Any], batch: tuple[Any, Any], loss: Loss,
                            vectors: list[np.ndarray]) -> list[Any]:
    """H·v on one batch (H the Hessian of the loss w.r.t. `variables`, v one array per variable): the gradient of
    g·v, with g from an inner tape."""
    import tensorflow as tf

    vectors = [tf.stop_gradient(tf.convert_to_tensor(v, var.dtype)) for v, var in zip(vectors, variables)]
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            value = _loss_value(model, batch, loss)
        grads = _dense(inner.gradient(value, variables), variables)
        dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vectors)])
    return _dense(outer.gradient(dot, variables), variables)
