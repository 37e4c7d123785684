"""Do the co-occurrence start's two paths (sdk/neighbors.py cooc_vectors: dense eigh, Lanczos above
DENSE_EIGH_MAX items) give the same item vectors on real data, and how long does each take? Fit users: every other
user; dim 32 (ModelConfig.dim). Prints both times, the largest difference of the vectors' dot products (what the
table starts from; signs are free) and the smallest |cosine| of matching columns (docs/decisions/cooc-init.md).

    OMP_NUM_THREADS=1 python lab/cooc_paths.py DATASET [--sparse-only]   (ml-100k, or a folder: docs/data.md)
"""
import sys
import time

import numpy as np

from metarec.sdk import neighbors as nb
from metarec.sdk.data import load_dataset

ds = load_dataset(sys.argv[1])
fit = np.unique(ds.user)[::2]
if "--sparse-only" in sys.argv:  # large catalogs: the dense path takes minutes there
    nb.DENSE_EIGH_MAX = 0
    t = time.time()
    nb.cooc_vectors(ds, fit, 32)
    sys.exit(print(f"{ds.n_items} items: sparse {time.time() - t:.1f} s"))
t = time.time()
nb.DENSE_EIGH_MAX = 10**9
vd = nb.cooc_vectors(ds, fit, 32)
t1 = time.time()
nb.DENSE_EIGH_MAX = 0
vs = nb.cooc_vectors(ds, fit, 32)
t2 = time.time()
cos = np.abs((vd * vs).sum(0)) / np.linalg.norm(vd, axis=0) / np.linalg.norm(vs, axis=0)
print(f"{ds.n_items} items: dense {t1 - t:.1f} s, sparse {t2 - t1:.1f} s, dot products differ by at most "
      f"{np.abs(vd @ vd.T - vs @ vs.T).max():.2e}, smallest column |cosine| {cos.min():.4f}")
