#!/usr/bin/env python3
"""The writer's floor of a convert: the time it takes only to write an
output's data into a new file, with nothing read and no process started.

Writes `data` MiB (default 512) of random bytes, as every other 2 MiB
block of a sparse 1 GiB-per-512-MiB file, in 1 MiB writes from one buffer
(the way `vhd convert` writes `half.vhd` to raw), into a new file in DIR,
REPS times (default 9), and prints each time and the median. No sync: on
tmpfs nothing can be synced, on a disk this is the `-t unsafe` floor.

    python3 scripts/write-floor.py /dev/shm [DATA_MIB] [REPS]

spec/performance.md ("Reading the table") compares vhd with it.
"""
import os
import statistics
import sys
import time

MIB = 1 << 20


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    data_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 9
    buf = os.urandom(MIB)
    path = os.path.join(directory, f"write-floor.{os.getpid()}")
    times = []
    try:
        for _ in range(reps):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
            try:
                os.ftruncate(fd, 2 * data_mib * MIB)
                start = time.perf_counter()
                for block in range(0, data_mib, 2):  # every other 2 MiB block
                    os.pwrite(fd, buf, 2 * block * MIB)
                    os.pwrite(fd, buf, 2 * block * MIB + MIB)
                times.append(time.perf_counter() - start)
            finally:
                os.close(fd)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    print(f"{data_mib} MiB into new pages in {directory}, 1 MiB writes: "
          + " ".join(f"{t * 1000:.0f}" for t in times)
          + f" ms; median {statistics.median(times) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
