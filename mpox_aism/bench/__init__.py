"""Benchmarks that ship with the product (``mpox-aism bench …``): classifier backends, the camera
pipeline, the daemon's soak, the diagnosis API under load.

They drive the other packages through their public API and measure; nothing imports them back.
"""
