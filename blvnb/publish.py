"""Put the built book online: ``blvnb publish`` (``make publish``) pushes ``_build/html`` to ``gh-pages``.

The way Jupyter Book's documentation publishes a book on GitHub Pages: ``ghp-import -n -p -f _build/html``
commits the built pages (with a ``.nojekyll`` file, so that GitHub serves ``_static/`` and ``_sources/``
as they are) to the ``gh-pages`` branch and force-pushes it to the remote. The branch then holds exactly
the last build.

A published book must be the one its repository reproduces, so :func:`check_build` refuses a build that

* is missing (no ``_build/html/index.html``), or was not made by ``blvnb reproduce`` (no build stamp),
* is older than what it shows: a notebook, an executed chapter, a hand-written page, a committed record or
  verdict, or the book's configuration changed, appeared or disappeared since it was built,
* was built from a dirty tree (uncommitted changes to tracked files, or untracked files git does not
  ignore), or outside a git checkout: its pages would show results no commit holds.

:func:`write_stamp` (called by :func:`blvnb.reproduce.build_book` after every successful build) records
what the check compares: the commit, the tree's uncommitted paths and a digest of every file shown.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from blvnb.errors import BlvnbError

#: the files a build shows, relative to the checkout: their digests are stamped at build time
SHOWN = ("_config.yml", "_toc.yml", "notebooks/*.ipynb", "book/*.md", "book/generated/*.ipynb",
         "book/verdicts/**/*.json", "records/**/*.json")


def stamp_path(root: Path) -> Path:
    """The build stamp, beside (not inside) ``_build/html``: it is not published."""
    return Path(root) / "_build" / "blvnb-build.json"


def shown_files(root: Path) -> dict[str, str]:
    """``{path relative to root: sha256}`` of every file matching :data:`SHOWN`."""
    root = Path(root)
    out = {}
    for pattern in SHOWN:
        for p in sorted(root.glob(pattern)):
            if p.is_file():
                out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)


def is_checkout(root: Path) -> bool:
    """Whether ``root`` is the top of a git work tree (not a plain folder, nor one inside another repository)."""
    try:
        top = _git(root, "rev-parse", "--show-toplevel")
    except FileNotFoundError:  # no git
        return False
    return top.returncode == 0 and Path(top.stdout.strip()).resolve() == Path(root).resolve()


def git_state(root: Path) -> dict | None:
    """``{"commit": HEAD, "dirty": [paths git status lists]}``, or None outside a git checkout (or without git)."""
    if not is_checkout(root):
        return None
    head = _git(root, "rev-parse", "HEAD")
    if head.returncode != 0:  # a repository without a commit yet
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=all")
    dirty = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return {"commit": head.stdout.strip(), "dirty": dirty}


def write_stamp(root: Path) -> Path:
    """Record, after a successful build, where it was built from and what it shows."""
    from blvnb.io import write_json_atomic

    stamp = {"built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "git": git_state(root), "shown": shown_files(root)}
    return write_json_atomic(stamp_path(root), stamp)


def _listed(paths: list[str], most: int = 8) -> str:
    more = f" and {len(paths) - most} more" if len(paths) > most else ""
    return ", ".join(paths[:most]) + more


def check_build(root: Path) -> dict:
    """The build stamp of ``root/_build/html`` when the build may be published; otherwise a BlvnbError that
    names every reason at once (missing, older than what it shows, built from a dirty tree)."""
    root = Path(root)
    html = root / "_build" / "html"
    rebuild = "rebuild it with `make book` (or `blvnb reproduce --profile PROFILE`)"
    if not (html / "index.html").is_file():
        raise BlvnbError(f"no built book at {html} (no index.html): {rebuild}, then publish")
    path = stamp_path(root)
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BlvnbError(f"{html} has no build stamp ({path}): it was not built by `blvnb reproduce`; {rebuild}") from None
    except ValueError as exc:
        raise BlvnbError(f"unreadable build stamp {path}: {exc}; {rebuild}") from None
    problems = []
    before, now = stamp.get("shown") or {}, shown_files(root)
    changed = sorted(p for p in before.keys() & now.keys() if before[p] != now[p])
    added, removed = sorted(now.keys() - before.keys()), sorted(before.keys() - now.keys())
    if changed or added or removed:
        parts = [f"{what}: {_listed(paths)}" for what, paths in
                 (("changed", changed), ("new", added), ("gone", removed)) if paths]
        problems.append(f"the build ({stamp.get('built')}) is older than what it shows — since it was built, "
                        + "; ".join(parts))
    git = stamp.get("git")
    if git is None:
        problems.append(f"it was built outside a git checkout of {root}: no commit holds what it shows")
    elif git.get("dirty"):
        problems.append(f"it was built from a dirty tree (at {git['commit'][:12]}, uncommitted: "
                        f"{_listed(git['dirty'])}): commit them (or stash them)")
    if problems:
        raise BlvnbError(f"will not publish {html}: " + "; ".join(problems) + f"; then {rebuild}")
    return stamp


def publish(root: Path, remote: str = "origin", branch: str = "gh-pages", echo=print) -> str:
    """Check the build (:func:`check_build`), then ``ghp-import -n -p -f`` it to ``branch`` of ``remote``.
    Returns the commit message written on the branch."""
    root = Path(root)
    stamp = check_build(root)
    url = _git(root, "remote", "get-url", remote)
    if url.returncode != 0:
        raise BlvnbError(f"the checkout {root} has no git remote {remote!r} to publish to "
                         f"(`git remote -v` lists them; add one with `git remote add {remote} URL`)")
    try:
        import ghp_import  # noqa: F401
    except ImportError:
        raise BlvnbError("ghp-import is not installed: pip install -e '.[book]' (or pip install ghp-import)") from None
    commit = stamp["git"]["commit"]
    message = f"The book built at {commit[:12]} on {stamp['built']} (blvnb publish)"
    echo(f"[publish] _build/html → {branch} of {remote} ({url.stdout.strip()})")
    proc = subprocess.run([sys.executable, "-m", "ghp_import", "-n", "-p", "-f", "-r", remote, "-b", branch,
                           "-m", message, str(root / "_build" / "html")], cwd=root, capture_output=True, text=True,
                          env=_committer(root))
    if proc.returncode != 0 or "Failed to process commit" in proc.stdout:
        raise BlvnbError(f"ghp-import could not publish to {branch} of {remote}:\n{(proc.stdout + proc.stderr).strip()}")
    echo(f"[publish] {message}")
    return message


def _committer(root: Path) -> dict:
    """The environment for ghp-import: its commit needs a committer; without a git identity configured it
    is the last commit's author, rather than a commit git rejects."""
    env = dict(os.environ)
    if not _git(root, "config", "user.email").stdout.strip() and "GIT_COMMITTER_EMAIL" not in env:
        who = _git(root, "log", "-1", "--format=%an%n%ae").stdout.splitlines()
        if len(who) == 2:
            env.setdefault("GIT_COMMITTER_NAME", who[0])
            env["GIT_COMMITTER_EMAIL"] = who[1]
    return env
