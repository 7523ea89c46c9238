"""The image and the native stack must run the same thing: same packages, same templates, same commands."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def dockerfile_packages():
    text = (ROOT / "Dockerfile").read_text()
    m = re.search(r"apt-get install -y --no-install-recommends(.*?);", text, re.S)
    assert m, "no apt-get install line in the Dockerfile"
    return set(m.group(1).replace("\\", " ").split())


def native_runtime_packages():
    text = (ROOT / "scripts" / "install-deps.sh").read_text()
    m = re.search(r"# runtime: keep in step with the Dockerfile\n(.*?)\n\s*# test tools", text, re.S)
    assert m, "no runtime package list in scripts/install-deps.sh"
    return set(m.group(1).split())


def test_same_runtime_packages():
    assert dockerfile_packages() == native_runtime_packages()


def test_both_start_the_rendered_supervisord_conf():
    entry = (ROOT / "docker" / "entrypoint.sh").read_text()
    stack = (ROOT / "scripts" / "stack.sh").read_text()
    assert "supervisord -n -c \"$DATA_DIR/config/supervisord.conf\"" in entry
    assert "supervisord -c \"$dir/config/supervisord.conf\"" in stack
    assert "mailserver\" --data \"$DATA_DIR\" init" in entry or "mailserver --data \"$DATA_DIR\" init" in entry
