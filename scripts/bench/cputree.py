#!/usr/bin/env python3
"""CPU seconds (user + system) used so far by processes and everything below them, for bench-milter.sh.

Usage: cputree.py PID...   prints one number per PID.
Counts each live process in the tree plus cutime/cstime, i.e. the CPU of descendants that have
exited and were reaped (Postfix's master reaps smtpd, cleanup, pipe...; pipe reaps the filter
script, which reaps `mailserver-milter inject` and sendmail, which reaps postdrop). Two readings
around a run give the CPU that run cost, whatever else the machine was doing.
"""
import os
import sys

HZ = os.sysconf("SC_CLK_TCK")

def snapshot():
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        procs[int(name)] = (ppid, utime + stime + cutime + cstime)
    return procs

def main() -> None:
    procs = snapshot()
    children = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    for root in (int(a) for a in sys.argv[1:]):
        total, stack = 0, [root]
        while stack:
            pid = stack.pop()
            if pid in procs:
                total += procs[pid][1]
                stack.extend(children.get(pid, []))
        print(f"{total / HZ:.2f}")

if __name__ == "__main__":
    main()
