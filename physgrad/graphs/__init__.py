"""Netlists trained on datasets: CSV data, losses and the ``physgrad fit`` run loop (application floor).

``physgrad.graphs.fit.fit_run(FitSpec(...), out)`` is what ``physgrad fit`` runs; see
:mod:`physgrad.graphs.fit` for the run folder, :mod:`physgrad.graphs.losses` for the losses and
:mod:`physgrad.graphs.data` for the CSV format.
"""
