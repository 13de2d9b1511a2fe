"""`_progress`: one progress bar over a run's epochs."""

from __future__ import annotations

import numpy as np


def test_epoch_progress_draws_one_bar_over_epochs(capsys):
    import keras

    from saliency_detect._progress import EpochProgress

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 3), "float32"), np.zeros((8, 1), "float32")
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=1.0)
    model.fit(x, y, epochs=50, verbose=0, callbacks=[EpochProgress(50, title="fitting"), stop])
    printed = capsys.readouterr().out
    assert printed.startswith("fitting\n")
    # One bar, counted in epochs, closed at the epoch early stopping ended on (2 of 50).
    assert "2/50" in printed and "epoch" in printed and "loss" in printed and "50/50" not in printed
    assert printed.count("\n") <= 3
