"""A private network namespace for a check: its own loopback, so the documented fixed ports
(8080, 9090, 6379, 8081, ...) are free and whatever runs on the machine cannot collide with
what the check starts, nor the check with it.

`enter()` re-executes the calling script under `unshare --net` (with `--map-root-user`
when not root), once; inside, it brings the loopback interface up. Processes the check
starts stay inside; the check stops them itself (the namespace ends with its last one).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import sys

MARK = "SSE_CHECK_NETNS"
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def enter() -> None:
    """Returns inside a fresh network namespace with loopback up, or exits with a reason."""
    if os.environ.get(MARK) == "1":
        loopback_up()
        return
    unshare = shutil.which("unshare")
    if unshare is None:
        sys.exit(f"{sys.argv[0]}: needs unshare (util-linux) for a private network namespace")
    argv = [unshare, "--net"]
    if os.geteuid() != 0:
        argv.append("--map-root-user")
    argv += [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:]]
    os.environ[MARK] = "1"
    try:
        os.execv(unshare, argv)
    except OSError as error:
        sys.exit(f"{sys.argv[0]}: cannot run unshare: {error}")


def loopback_up() -> None:
    """`ip link set lo up`, without needing iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
