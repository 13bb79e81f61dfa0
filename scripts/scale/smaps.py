"""Where a process's resident memory grew between two readings, mapping by mapping (/proc/PID/smaps).

Used by scripts/scale/run.py and scripts/idle_rss.py to split a figure per connection into what the
connections hold for as long as they are open and what a ramp left behind. Each reading is the resident
bytes of every mapping, keyed by its start address; the growth is grouped as:

- `heap`: the allocator's arenas (the main `[heap]` and the threads' arenas, 64 MiB reservations of which
  only the part in use is mapped read-write); small objects, pooled queues and buffers, whatever the
  allocator keeps after a free;
- `large`: other anonymous mappings: allocations of 128 KiB or more that the allocator maps on their own
  (the connection table, the timer wheel's node table, big vectors) and the receive buffers and rings
  shared with the kernel; each is listed with its size, which names it (the connection table is the
  fixed-file table's size times the entry's size);
- `file`: pages of the binary and libraries (code run for the first time);
- `kernel`: io_uring's rings mapped from the kernel, stacks and other special mappings.

Standard library only.
"""

import re

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")
ARENA = 64 << 20


def read(pid):
    """{start: (size, rss, perms, name)} of `pid`'s mappings, in bytes."""
    maps = {}
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                start, end = int(m.group(1), 16), int(m.group(2), 16)
                current = start
                maps[start] = [end - start, 0, m.group(3), m.group(4).strip()]
            elif line.startswith("Rss:") and current is not None:
                maps[current][1] = int(line.split()[1]) * 1024
    return {k: tuple(v) for k, v in maps.items()}


def kind(start, size, perms, name, maps):
    """The group of one mapping (see the module doc)."""
    if name == "[heap]":
        return "heap"
    if name.startswith("[stack") or name in ("[vvar]", "[vdso]", "[vsyscall]", "[vvar_vclock]") \
            or "io_uring" in name:
        return "kernel"
    if name:
        return "file"
    # A thread arena: read-write at a 64 MiB-aligned start, the rest of its reservation mapped without
    # access right after it.
    after = maps.get(start + size)
    if start % ARENA == 0 and after is not None and after[2].startswith("---") \
            and size + after[0] == ARENA:
        return "heap"
    if start % ARENA == 0 and size == ARENA and perms.startswith("rw"):
        return "heap"
    if perms.startswith("---"):
        return "kernel"  # guard pages, reservations: never resident
    return "large"


def growth(before, after):
    """({group: bytes}, [(bytes, size, start) of the `large` mappings that grew, largest first])."""
    groups = {"heap": 0, "large": 0, "file": 0, "kernel": 0}
    large = []
    for start, (size, rss, perms, name) in after.items():
        old = before.get(start)
        grew = rss - (old[1] if old and old[0] == size else 0)
        if old is not None and old[0] != size:
            # Resized in place (an arena grown, a vector moved by mremap): count the difference.
            grew = rss - old[1]
        group = kind(start, size, perms, name, after)
        groups[group] += grew
        if group == "large" and grew > 0:
            large.append((grew, size, start))
    for start, (size, rss, perms, name) in before.items():
        if start not in after:
            groups[kind(start, size, perms, name, before)] -= rss
    large.sort(reverse=True)
    return groups, large


def describe(before, after, per, top=6):
    """One line per group and the largest `large` mappings, as bytes per `per` (connections)."""
    groups, large = growth(before, after)
    total = sum(groups.values())
    lines = [f"  RSS growth by mapping, bytes per connection: total {total / per:.1f} = "
             + ", ".join(f"{g} {b / per:.1f}" for g, b in groups.items())]
    for grew, size, _ in large[:top]:
        lines.append(f"    large mapping of {size / 1024:.0f} KiB: +{grew / 1024:.0f} KiB "
                     f"({grew / per:.1f} per connection)")
    return "\n".join(lines)
