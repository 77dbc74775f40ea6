"""Model merging through mergekit's Python API, and the merge-and-verify cell of MergeGuard grids.

Torch-free: ``methods`` (mergekit's 20 methods and what each parameter does), ``config`` (cell
and step configs, canonical cells), ``preflight`` (model folders checked before any work).
With torch: ``mergekit_run`` (one in-process merge with explicit options) and ``cell`` (the grid
step: merge, HuRef, verification, utility, one ``merge_cell`` row).
"""
