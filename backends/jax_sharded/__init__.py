"""Sharded Sinkhorn for one large point-cloud problem spread over a JAX device mesh.

``layout`` (mesh and checks), ``output`` (the result),
``costs`` (the affine split of the cost, closed-form mean/std),
``softmin`` (the per-device passes: cost kept or recomputed), ``sinkhorn`` (the loop and the
jitted solve). The public entry point is :func:`ot_batch.sharded.solve_sample`.
"""
