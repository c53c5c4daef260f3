"""Plots and reports: training curves, adaptive-L2 lambdas, ranked lists, heatmap overlays,
skeletons, and the Markdown report that links them.

Matplotlib figures are built with `matplotlib.figure.Figure` and rendered by the Agg canvas,
never through pyplot, so no display is needed and no global backend state is touched.
"""
