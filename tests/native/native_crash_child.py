"""Child process of test_sigkill_mid_record_loses_no_acknowledged_event: records through the native library and
acknowledges each event on stdout (unbuffered) only after mr_record returned, i.e. once it is durable."""
import os
import sys

from metarec.runtime.native import NativeRecommender


def main(bundle: str, key: str, db: str, run: int) -> None:
    rec = NativeRecommender.open(bundle, db, key)
    items = [r.item_id for r in rec.recommend("seed-user", 8.8e8, rec.k_max)]
    os.write(1, b"ready\n")
    i = 0
    while True:
        eid = f"r{run}-e{i}"
        rec.record(f"user{i % 5}", items[i % len(items)], 8.8e8 + i, event_id=eid)
        if run and i % 3 == 0:  # a client retrying the previous run's events: must stay a no-op
            rec.record("retry", items[0], 0.0, event_id=f"r{run - 1}-e{i}")
        if i % 4 == 0:
            rec.recommend(f"user{i % 5}", 8.8e8 + i, 5)  # adaptations and deferred heads between the writes
        os.write(1, f"ack {eid}\n".encode())
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
