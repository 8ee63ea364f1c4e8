"""Train and score heads and backbones on arrays (Keras; no Django).

- :mod:`.model`: a new head, the full model, losses, metrics and input checks shared by all.
- :mod:`.heads`: train one head or several (jointly or disjointly) on cached features.
- :mod:`.backbone`: fine-tune a backbone with its head; train a grown backbone.
- :mod:`.evaluate`: evaluate a head; validation metrics.
"""
