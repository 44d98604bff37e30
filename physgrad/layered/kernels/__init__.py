"""Per-backend kernels of the layered C-EP step, all specified by one
:class:`physgrad.layered.fused.FusedSpec` (the energy of :mod:`physgrad.energies.layered` and the
block schedule of :func:`physgrad.minimizers.block.layer_groups`).

* :mod:`physgrad.layered.fused` -- the numpy reference kernel (float32/float64, BLAS, Python threads);
* :mod:`.numba_cpu` -- one compiled (numba) kernel per batch, parallel over the columns of ``W1``
  (numba is a dependency; SGD, momentum and Adam);
* :mod:`._math` -- the C-EP step written once against an array namespace (numpy, torch,
  array-api-strict), used by :mod:`.torch_backend` (optional: ``pip install physgrad[torch]``).
"""
