"""The lab bench: probes, variant runners, close-up cutting, the paired bootstrap, summaries, device
scripts. Not installed (``pip install .`` ships ``mpox_aism`` alone); run from the repository root as
``.venv/bin/python -m research.NAME``. Everything here drives the package through its public API;
what it measured, and the commit that can reproduce variants no longer in the product, is in
docs/RESULTS.md.
"""
