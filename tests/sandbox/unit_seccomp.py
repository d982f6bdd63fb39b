#!/usr/bin/env python3
"""Compiles the system call restrictions of a systemd service unit into seccomp programs.

For a machine whose init is not systemd: the test that runs POM under its unit's restrictions
gives these programs to bubblewrap (`--add-seccomp-fd`), as systemd would install them.

Usage: unit_seccomp.py UNIT OUTDIR

Reads `SystemCallFilter=` (an allow list, then `~` lines that take groups or calls out of it,
as systemd reads them), `SystemCallErrorNumber=` and `MemoryDenyWriteExecute=`. Groups
(`@system-service`) are expanded with `systemd-analyze syscall-filter`, recursively. Writes
OUTDIR/filter.bpf and, when the unit denies writable and executable memory, OUTDIR/mdwe.bpf
(the same conditions as systemd's: mmap with PROT_WRITE|PROT_EXEC, mprotect and pkey_mprotect
adding PROT_EXEC, shmat with SHM_EXEC). Prints each program's path on a line, then a summary.
"""

import errno
import os
import subprocess
import sys

import seccomp

PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000


def unit_settings(path):
    """The [Service] settings of a unit, each key with its values in order."""
    settings, section = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]" and "=" in line:
                key, value = line.split("=", 1)
                settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def expand(name, seen=None):
    """The system calls a name stands for: itself, or a group's members, recursively."""
    if not name.startswith("@"):
        return {name}
    seen = set() if seen is None else seen
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run(
        ["systemd-analyze", "--no-pager", "syscall-filter", name],
        check=True, capture_output=True, text=True,
    ).stdout
    calls = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if word and not word.startswith("#"):
            calls |= expand(word, seen)
    return calls


def main():
    unit, outdir = sys.argv[1], sys.argv[2]
    settings = unit_settings(unit)
    os.makedirs(outdir, exist_ok=True)
    allowed, denied, allow_list = set(), set(), None
    for value in settings.get("SystemCallFilter", []):
        deny = value.startswith("~")
        names = set()
        for word in value.lstrip("~").split():
            names |= expand(word)
        if allow_list is None:
            allow_list = not deny
        if deny:
            if allow_list:
                allowed -= names
            else:
                denied |= names
        elif allow_list:
            allowed |= names
        else:
            denied -= names
    code = settings.get("SystemCallErrorNumber", [None])[-1]
    refuse = seccomp.ERRNO(getattr(errno, code)) if code else seccomp.KILL_PROCESS
    written, unknown = [], 0
    if allow_list is not None:
        f = seccomp.SyscallFilter(defaction=refuse if allow_list else seccomp.ALLOW)
        for name in sorted(allowed if allow_list else denied):
            try:
                f.add_rule(seccomp.ALLOW if allow_list else refuse, name)
            except (RuntimeError, ValueError):
                unknown += 1  # a call this libseccomp does not know, on no architecture here
        path = os.path.join(outdir, "filter.bpf")
        with open(path, "wb") as out:
            f.export_bpf(out)
        written.append(path)
    if settings.get("MemoryDenyWriteExecute", ["no"])[-1] in ("yes", "true", "1", "on"):
        eperm = seccomp.ERRNO(errno.EPERM)
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        wx = PROT_WRITE | PROT_EXEC
        for call in ("mmap", "mmap2"):
            try:
                f.add_rule(eperm, call, seccomp.Arg(2, seccomp.MASKED_EQ, wx, wx))
            except (RuntimeError, ValueError):
                pass
        for call, arg in (("mprotect", 2), ("pkey_mprotect", 2)):
            f.add_rule(eperm, call, seccomp.Arg(arg, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
        f.add_rule(eperm, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
        path = os.path.join(outdir, "mdwe.bpf")
        with open(path, "wb") as out:
            f.export_bpf(out)
        written.append(path)
    for path in written:
        print(path)
    mode = "allowed" if allow_list else "denied"
    print(f"# {len(allowed if allow_list else denied)} calls {mode}, {unknown} unknown here",
          file=sys.stderr)


if __name__ == "__main__":
    main()
