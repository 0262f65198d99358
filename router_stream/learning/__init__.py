"""The learned router, offline side: data loading and split (:mod:`.data`), featurizers
(:mod:`.features`), routing metrics (:mod:`.evaluation`), the model artifact (:mod:`.artifact`),
training and calibration (:mod:`.train`), held-out evaluation (:mod:`.held_out`) and their
commands (:mod:`.offline_commands`).

Serving uses only :mod:`.artifact` and :mod:`.features` (numpy, scipy, scikit-learn's hashing
vectorizer); :mod:`router_stream.routing.learned` is the strategy.

Internal: the public surface is :mod:`router_stream` (its ``__all__``); names here may change.
"""
