"""Child process for test_crash.py: appends events through the runtime Store and acknowledges each one on stdout
(unbuffered) only after `add_event` returned, i.e. after the runtime promised durability."""
import os
import sys

from metarec.runtime.store import Store


def main(db: str, run: int) -> None:
    store = Store(db)
    os.write(1, b"ready\n")
    i = 0
    while True:
        eid = f"r{run}-e{i}"
        store.add_event(eid, f"user{i % 5}", f"item{i % 17}", 8.8e8 + i)
        if run and i % 3 == 0:  # a client retrying the previous run's event (same content): must stay a no-op
            store.add_event(f"r{run - 1}-e{i}", f"user{i % 5}", f"item{i % 17}", 8.8e8 + i)
        os.write(1, f"ack {eid}\n".encode())
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
