"""Pruning while Keras trains.

    callback.py   SPACallback: masks a live model inside model.fit, the slim model when fit ends
    schedules.py  how the removed fraction grows during training (ConstantSparsity, PolynomialDecay)
"""
