#!/usr/bin/env python3
"""Checks what smtp-sink received (one file per message, `smtp-sink -d DIR/m.`), for bench-milter.sh.

Prints one line of NAME=VALUE pairs: files, messages that parse with an HTML part, messages whose
decoded HTML contains exactly one tracking pixel, and messages with exactly one DKIM-Signature.
"""
import email
import email.policy
import pathlib
import sys

def main(directory: str) -> None:
    files = pixel = dkim = html_ok = 0
    for path in pathlib.Path(directory).iterdir():
        files += 1
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        if len(msg.get_all("DKIM-Signature") or []) == 1:
            dkim += 1
        for part in msg.walk():
            if part.get_content_type() == "text/html":
                html = part.get_payload(decode=True) or b""
                html_ok += 1
                if html.count(b"/pixel?id=") == 1:
                    pixel += 1
                break
    print(f"files={files} html={html_ok} pixel={pixel} dkim={dkim}")

if __name__ == "__main__":
    main(sys.argv[1])
