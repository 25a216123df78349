"""The published encoders' parameters mapped onto ours.

One module per reference implementation; each maps that reference's ``state_dict`` onto
the configuration of our encoder that computes the same function (tested against the
reference's own outputs, ``tests/fixtures/reference``). What they share (the MNIST INR
statistics and layout, the check of a reference ``state_dict``) is in
:mod:`~neural_graphs.encoders.reference.common`.
"""
