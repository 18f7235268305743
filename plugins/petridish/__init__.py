"""Petridish (Hu et al., "Efficient Forward Architecture Search", NeurIPS 2019): in progress.

What exists: the parent choice on the lower convex hull of (FLOPs, error) (:mod:`.hull`),
candidate layers behind stop-gradient / stop-forward that train beside a parent without
changing it (:mod:`.candidates`), and finalization into a child that starts as the parent's
exact function, with weight inheritance (:mod:`.finalize`). The tuner around them (the pool in
the study, rounds as launcher batches, weights stored per trial) is not registered yet, so
``tuner=petridish`` is not an option.
"""
