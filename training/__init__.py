"""Training side of mpox-aism: labels, data, augmentation, model zoo, training, evaluation.

This package is the bottom of the dependency chain (kiosk → pipeline → export → training), so the
shared contracts that every layer needs — the label order and the one ``preprocess`` function —
live here and are imported from here everywhere else.
"""
