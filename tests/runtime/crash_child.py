"""Child process for test_crash.py: appends events through the runtime Store and acknowledges each one on stdout
(unbuffered) only after `add_event` returned, i.e. after the runtime promised durability.

    crash_child.py DB RUN                        # one writer, forever
    crash_child.py DB RUN PROC USERS BATCH       # one of several processes sharing DB: take the writer lock
                                                 # (StateError while another holds it), write BATCH events, release
"""
import os
import sys
import time

from metarec.runtime.errors import StateError
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


def contend(db: str, run: int, proc: int, users: int, batch: int) -> None:
    os.write(1, b"ready\n")
    i = 0
    while True:
        try:
            store = Store(db)
        except StateError:  # another process is the writer: one writer per state file, so wait for a turn
            time.sleep(0.002)
            continue
        try:
            for _ in range(batch):
                eid, user = f"p{proc}-r{run}-e{i}", f"p{proc}-u{(i + run * 997) % users}"  # each run: other users
                store.add_event(eid, user, f"item{i % 17}", 8.8e8 + i)
                os.write(1, f"ack {eid} {user}\n".encode())
                i += 1
        finally:
            store.close()


if __name__ == "__main__":
    if len(sys.argv) > 3:
        contend(sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6]))
    else:
        main(sys.argv[1], int(sys.argv[2]))
