"""What a power cut must leave on the card: the power-cut test's checks of one state, run in
the libguestfs appliance on the card mounted as the next boot would mount it.

The invariant (firstboot/README.md, "Crash safety"): a private host key is whole and has its
matching .pub; files replaced atomically (the evidence, the published fingerprints and
known_hosts, /etc/issue) are whole or absent, never torn; and when committed.json is there,
it is whole, its keys are on disk as committed, and its publication and evidence are behind
it. Nothing committed is fine: the next boot starts over.

Standard library only (it runs on the host's python3 copied into the appliance), with the
program's own checks of a key pair (entropi_firstboot.committed, .sshkey).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

from entropi_firstboot import committed, sshkey

BOOT_DIR = "boot/firmware"
UNREADABLE = "\0unreadable: "  # read()'s text for a file that cannot be read: no whole file holds a NUL
EVIDENCE = ("var/log/entropi/firstboot-evidence.json", BOOT_DIR + "/entropi/firstboot-evidence.json")


def read(path: str) -> str | None:
    """The file's text; None when it is absent. A file that cannot be read (EIO: its
    clusters or blocks are not what its entry says) reads as a NUL and the error, which no
    whole file holds."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return UNREADABLE + exc.strerror


def inspect(root: str) -> dict:
    """What a power cut left: the committed set (its fingerprints, or None when nothing is
    committed: the next boot starts over), every file that is not whole or not sound, and
    the tree (each file's path and a hash of its bytes)."""
    seen = {"committed": None, "problems": problems(root), "tree": tree(root)}
    text = read(os.path.join(root, "var/lib/entropi/committed.json"))
    if text is None:
        return seen
    try:
        record = json.loads(text)
        seen["committed"] = [key["fingerprint"] for key in record["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        seen["problems"].append(f"committed.json is torn ({text[:40]!r}): {exc}")
        return seen
    for key in record["keys"]:
        problem = committed.inspect(os.path.join(root, key["file"].lstrip("/")), key)
        if problem:
            seen["problems"].append(f"committed {key['file']}: {problem}")
    seen["problems"] += unpublished(root, os.path.join(root, BOOT_DIR, "entropi"), record)
    return seen


def problems(root: str) -> list[str]:
    """Unsound key pairs and torn files, committed or not."""
    found = [problem for private in sorted(glob.glob(os.path.join(root, "etc/ssh/ssh_host_*_key")))
             for problem in [pair_problem(private)] if problem]
    return found + torn_files(root, os.path.join(root, BOOT_DIR, "entropi"))


def tree(root: str) -> dict:
    """Every file on the card (both partitions): its path and the start of its bytes' SHA-256."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as handle:
                    files[path[len(root):]] = hashlib.sha256(handle.read()).hexdigest()[:16]
            except OSError as exc:
                files[path[len(root):]] = f"unreadable: {exc.strerror}"
    return files


def pair_problem(private: str) -> str | None:
    """The README's invariant: a private key on disk is whole and has its matching .pub."""
    name = os.path.basename(private)
    text, public = read(private), read(private + ".pub")
    if not text:
        return f"{name} is empty"
    if public is None:
        return f"{name} has no .pub"
    try:
        _, blob = sshkey.parse_public(public)
    except sshkey.KeyFileError as exc:
        return f"{name}.pub is not whole ({exc})"
    problem = sshkey.check_private(text, blob)
    return f"{name}: {problem}" if problem else None


def torn_files(root: str, boot: str) -> list[str]:
    """Files replaced atomically are there whole (old or new) or absent, never torn."""
    texts = {"/" + name: read(os.path.join(root, name)) for name in EVIDENCE}
    texts.update({f"/{BOOT_DIR}/entropi/{name}": read(os.path.join(boot, name))
                  for name in ("known_hosts", "ssh_host_fingerprints.txt")})
    texts["/etc/issue"] = read(os.path.join(root, "etc/issue")) or ""
    problems = []
    for path, text in texts.items():
        if text is None:
            continue
        if text.startswith(UNREADABLE):
            problems.append(f"{path} is unreadable ({text[len(UNREADABLE):]})")
        elif not whole(path, text):
            problems.append(f"{path} is torn ({len(text)} bytes)")
    return problems


def whole(path: str, text: str) -> bool:
    if path.endswith(".json"):
        try:
            json.loads(text)
        except ValueError:
            return False
        return True
    if path == "/etc/issue":
        return text.startswith("Debian GNU/Linux")
    return text.endswith("\n") and "\0" not in text


def unpublished(root: str, boot: str, record: dict) -> list[str]:
    """The README: a committed set has its evidence and its publication behind it."""
    prints = [key["fingerprint"] for key in record["keys"]]
    host = (read(os.path.join(root, "etc/hostname")) or "").strip()
    wanted = {"ssh_host_fingerprints.txt": "\n".join(prints) + "\n",
              "known_hosts": "".join(f"{host} {key['public']}\n" for key in record["keys"])}
    problems = [f"/{BOOT_DIR}/entropi/{name}: {'missing' if text is None else 'not the committed set'}"
                for name, want in sorted(wanted.items())
                for text in [read(os.path.join(boot, name))] if text != want]
    issue = read(os.path.join(root, "etc/issue")) or ""
    if any(line not in issue.splitlines() for line in prints):
        problems.append("/etc/issue: the committed fingerprints are not there")
    for path in (os.path.join(root, name) for name in EVIDENCE):
        try:
            evidence = json.loads(read(path) or "")
            done = evidence["phase"] == "done" and [k["fingerprint"] for k in evidence["committed"]["keys"]] == prints
        except (ValueError, KeyError, TypeError):
            done = False
        if not done:
            problems.append(f"{path[len(root):]}: not the evidence of the committed set")
    return problems
