"""Interactive controls (ipywidgets) that the chapters use: one module per chapter topic.

Each module builds a widget whose knobs teach something (e.g. pick an activation and watch the
gradient histogram). On the website the widgets show the state saved when the page was built; run
the notebook (locally or on Colab) to move the knobs.
"""
