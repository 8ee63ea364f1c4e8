"""The Overview page: the current team's work at a glance, composed from every app's selectors.

It reads heads, training, assemblies and releases, so it sits above them all in the layers
(.importlinter "app-layers"): no app imports it, and the dashboard web kit stays below the apps.
"""
