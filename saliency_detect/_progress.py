"""`EpochProgress`: one progress bar over a whole Keras training run, a step per epoch."""

from __future__ import annotations

import keras

_SHOWN = ("loss", "val_loss", "accuracy", "val_accuracy")


class EpochProgress(keras.callbacks.Callback):
    """A Keras callback drawing one `Progbar` whose steps are epochs, not batches.

    Pass it with `verbose=0` to `Model.fit` so long runs show one line per training run
    (its loss and accuracy, and their validation values) instead of one per epoch. When early
    stopping ends training before `epochs`, the bar is closed at the epoch reached.

    Args:
        epochs: the most epochs the run may take (the bar's length).
        title: printed before the bar.
    """

    def __init__(self, epochs: int, title: str = ""):
        super().__init__()
        self.epochs = int(epochs)
        self.title = title
        self._bar: keras.utils.Progbar | None = None
        self._seen = 0

    def on_train_begin(self, logs=None):
        if self.title:
            print(self.title, flush=True)
        self._bar = keras.utils.Progbar(self.epochs, unit_name="epoch", stateful_metrics=_SHOWN)
        self._seen = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        values = [(k, float(logs[k])) for k in _SHOWN if k in logs]
        self._seen = epoch + 1
        self._bar.update(self._seen, values=values, finalize=self._seen >= self.epochs)

    def on_train_end(self, logs=None):
        if self._bar is not None and self._seen < self.epochs:
            self._bar.update(self._seen, finalize=True)
