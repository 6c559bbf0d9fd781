"""`modeleval ui`: a read-only web dashboard over the results store (MongoDB or the local
results directory) and, given a kubeconfig, the live phase of each evaluation.

It imports ``api``, the store's contract and ``report``; never ``engine`` or ``controller``.
"""
