"""``fcnseg report``: one self-contained HTML page about a training run.

:mod:`~fcnseg.report.collect` reads the run folder and evaluates its ``best.pt``
on the run's validation split (per image too), :mod:`~fcnseg.report.plots` draws
the figures, :mod:`~fcnseg.report.html` writes the page with every image inside
it, so that it opens offline and can be mailed as one file.
"""
