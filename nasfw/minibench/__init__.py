"""Mini-benchmarking (Khamitov & Popova, "Mini-benchmarking approach to optimize evolutionary
methods of Neural Architecture Search", the seeds' slides): a DB of the best networks of many
small problems (:mod:`~nasfw.minibench.db`, built by ``python -m nasfw mode=minibench``:
:mod:`~nasfw.minibench.build`), folded encodings of networks (:mod:`~nasfw.minibench.encoding`),
classes of problems with their constraint sets (:mod:`~nasfw.minibench.classes`), a classifier
(:mod:`~nasfw.minibench.classify`) and ``search_space=auto`` (:mod:`~nasfw.minibench.auto`).
"""
