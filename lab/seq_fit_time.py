"""Fit time (wall and CPU) and the epoch choice of one SeqRec fit on train + validation users (issue 20 item 5).

    OMP_NUM_THREADS=1 python lab/seq_fit_time.py [DATASET] ["KEYWORD=VALUE, ..." for SeqRec]
    e.g. python lab/seq_fit_time.py ml-100k "arch='gru4rec', progress=False"
"""
import sys
import time

import numpy as np

from metarec.sdk.baselines_seq import SeqRec
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import split_users

ds = load_dataset(sys.argv[1] if len(sys.argv) > 1 else "ml-100k")
sp = split_users(ds)
kw = eval("dict(%s)" % (sys.argv[2] if len(sys.argv) > 2 else ""))  # noqa: S307 (a lab script's own argument)
m = SeqRec(**kw)
t = time.perf_counter()
m.fit(ds, np.r_[sp.train, sp.val], None)
print("fit", time.perf_counter() - t)
print({k: v for k, v in m.params.items()})
