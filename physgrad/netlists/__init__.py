"""Netlists trained on datasets: CSV data, losses and the ``physgrad fit`` run loop (application floor).

``physgrad.netlists.fit.fit_run(FitSpec(...), out)`` is what ``physgrad fit`` runs; see
:mod:`physgrad.netlists.fit` for the run folder, :mod:`physgrad.netlists.losses` for the losses and
:mod:`physgrad.netlists.data` for the CSV format.
"""
