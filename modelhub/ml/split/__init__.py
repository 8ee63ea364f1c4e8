"""Split full models into one shared backbone and standalone heads.

- :mod:`.single`: cut the head out of one full model, given its stored backbone.
- :mod:`.plan`: pass 1 of a family split: line every file up with a reference, choose the cut.
- :mod:`.family`: split K full models into one backbone, K heads and any branches, streaming.
"""
