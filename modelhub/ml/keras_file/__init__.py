"""A ``.keras`` file read without deserialising it: the flat graph, the opened archive, alignment and sub-models.

- :mod:`.graph`: parse a checked config into a flat graph of leaf-layer calls (no Keras).
- :mod:`.archive`: an opened file (through :mod:`modelhub.ml.untrusted`) and its layers' stored state.
- :mod:`.align`: line two graphs up by structure and weights; where a graph can be cut.
- :mod:`.submodel`: build a backbone, head or branch from part of a file, with Keras' safe mode.
"""
