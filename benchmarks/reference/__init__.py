"""Side-by-side runs of the published reference code (never part of this project).

Run with a Python that can import the reference repositories (``--reference-dir``): the
fixtures that prove our encoders compute the reference's function are written from here,
and one training step of each is timed against ours.
"""
