"""Petridish (Hu et al., "Efficient Forward Architecture Search", NeurIPS 2019): in progress.

What exists: the parent choice on the lower convex hull of (FLOPs, error) (:mod:`.hull`). The
tuner (stop-gradient / stop-forward candidates, finalization, the pool in the study) is not
registered yet, so ``tuner=petridish`` is not an option.
"""
