"""Privilege separation, tried as an attacker on the same machine would: as another local user.

Whoever can connect to a milter socket can have mail DKIM-signed (OpenDKIM) or hand the tracking
milter a made-up `{auth_authen}`. Each socket lives in a directory only its daemon and Postfix's group
may enter, so an unrelated user (`nobody`) is refused while Postfix's own user gets through.
"""

import pytest

from conftest import TARGET

# Run as the given user: reports whether the socket accepts a connection, after checking that the
# user can reach the run directory itself (so a refusal comes from the socket's own directory, not
# from somewhere above it).
PROBE = r"""
import os, socket, sys
path = sys.argv[1]
run_dir = os.path.dirname(os.path.dirname(path))
try:
    os.listdir(run_dir)
except OSError as e:
    print("run-dir-unreachable", e)
    sys.exit(0)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path)
    print("connected")
except PermissionError:
    print("refused")
finally:
    s.close()
"""


def socket_path(stack, name):
    base = "/data" if TARGET == "container" else str(stack.data_dir)
    return "%s/run/%s/%s.sock" % (base, name, name)


@pytest.mark.parametrize("name", ["milter", "opendkim"])
def test_only_postfix_can_reach_the_milter_sockets(stack, name):
    path = socket_path(stack, name)
    assert stack.run_as("postfix", "python3", "-c", PROBE, path).stdout.strip() == "connected"
    assert stack.run_as("nobody", "python3", "-c", PROBE, path).stdout.strip() == "refused"
    # And the socket itself is not world-writable either (owner and group only).
    mode = stack.run_as("root", "stat", "-c", "%a %G", path).stdout.split()
    assert mode[0] in ("660", "770") and mode[1] == "postfix", mode
