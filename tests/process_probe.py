"""What a process holds, read from Linux's /proc (psutil is not a dependency): resident
memory, native threads, child processes and open TCP connections to one port."""

import os
from dataclasses import dataclass

MIB = 2**20
# /proc/net/tcp state codes (include/net/tcp_states.h); TIME_WAIT sockets belong to no process
TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK",
              "0A": "LISTEN", "0B": "CLOSING"}  # fmt: skip


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of `pid`."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def thread_count(pid: int) -> int:
    """Native threads of `pid` (Python's and those of libraries: OpenMP, gloo, ...)."""
    return len(os.listdir(f"/proc/{pid}/task"))


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (DataLoader workers of a training process), by their ppid."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return sorted(children)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def tcp_connections(pid: int, remote_port: int) -> dict[str, int]:
    """State -> count of `pid`'s TCP sockets connected to `remote_port` (any address)."""
    inodes = _socket_inodes(pid)
    counts: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as lines:
                next(lines)  # the header
                for line in lines:
                    fields = line.split()
                    port = int(fields[2].rsplit(":", 1)[1], 16)
                    if port == remote_port and fields[9] in inodes:
                        state = TCP_STATES.get(fields[3], fields[3])
                        counts[state] = counts.get(state, 0) + 1
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
    return counts


@dataclass(frozen=True)
class ProcessTreeSample:
    """One process and its direct children (a rank and its DataLoader workers) at one moment."""

    main_rss: int
    children_rss: int
    children: int
    main_threads: int
    python_threads: int
    connections: dict[str, int]  # state -> count, main process and children together

    @property
    def total_rss(self) -> int:
        return self.main_rss + self.children_rss

    @property
    def open_connections(self) -> int:
        return sum(self.connections.values())


def sample_process_tree(pid: int, python_threads: int, remote_port: int) -> ProcessTreeSample:
    children = child_pids(pid)
    connections: dict[str, int] = {}
    for member in [pid, *children]:
        for state, count in tcp_connections(member, remote_port).items():
            connections[state] = connections.get(state, 0) + count
    return ProcessTreeSample(
        main_rss=rss_bytes(pid),
        children_rss=sum(rss_bytes(child) for child in children),
        children=len(children),
        main_threads=thread_count(pid),
        python_threads=python_threads,
        connections=connections,
    )
