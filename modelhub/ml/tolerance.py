"""THE numerical tolerance of ModelHub, defined once, in a module that imports nothing.

Every check that a rebuilt model reproduces its original (a head cut from a full model, a
branch on its trunk, a grown backbone, an assembled SavedModel) passes when
``max |expected - got| <= VERIFY_TOLERANCE * max(1, max |expected|)``: float noise grows
with the size of the values, so the tolerance does too. :func:`modelhub.ml.probes.check_close`
applies it. This module imports nothing, so the web process may read the figure (lazily, as
it may import no TensorFlow) to show whether a stored verification passed.
"""

VERIFY_TOLERANCE = 1e-5
