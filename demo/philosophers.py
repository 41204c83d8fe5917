#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""philosophers.py -- Axon's five dining philosophers, in Python, on axstm.

Each philosopher is a thread that takes both of its forks in one Axon.STM
commit (a collection of two keys), eats, and puts them back.  A commit that
loses to a neighbour's raises ConcurrentUpdate, and the philosopher simply
tries again a moment later: no locks, no deadlock.

    python3 demo/philosophers.py [SECONDS] [PHILOSOPHERS]

Runs for SECONDS (default 3) and prints how many meals each had.
"""

import random
import sys
import threading
import time

from Axon.STM import BusyRetry, ConcurrentUpdate, Store


def dine(store, name, forks, stop, meals):
    while not stop.is_set():
        try:
            table = store.using(*forks)
            if any(table[fork].value is not None for fork in forks):
                time.sleep(random.random() / 100)  # a neighbour eats
                continue
            for fork in forks:
                table[fork].value = name
            table.commit()
        except (ConcurrentUpdate, BusyRetry):
            time.sleep(random.random() / 100)
            continue
        meals[name] += 1
        time.sleep(random.random() / 50)  # eating
        for fork in forks:
            table[fork].value = None
        table.commit()  # the forks are ours: this cannot conflict
        time.sleep(random.random() / 50)  # thinking


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    store = Store()
    stop = threading.Event()
    meals = {"philosopher.%d" % i: 0 for i in range(1, n + 1)}
    threads = []
    for i in range(1, n + 1):
        forks = ["fork.%d" % i, "fork.%d" % (i % n + 1)]
        t = threading.Thread(target=dine, args=(store, "philosopher.%d" % i, forks, stop, meals))
        t.start()
        threads.append(t)
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    for name, count in meals.items():
        print("%s ate %d times" % (name, count))
    store.dump()


if __name__ == "__main__":
    main()
