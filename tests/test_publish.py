"""``blvnb publish`` / ``make publish`` against a local bare repository, on a tiny fake build (never the real book).

A temporary checkout holds the files the book shows (a notebook, a page, an executed chapter) and a
``_build/html`` written by hand; :func:`blvnb.publish.write_stamp` stamps it as ``build_book`` does after a
build. Publishing pushes it to ``gh-pages`` of a ``git init --bare`` remote in the temporary folder.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from blvnb import publish, reproduce
from blvnb.cli import main
from blvnb.errors import BlvnbError

ROOT = Path(__file__).resolve().parents[1]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_NOSYSTEM": "1"}

pytest.importorskip("ghp_import", reason="ghp-import is not installed (pip install -e .[book])")


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A committed checkout with an ``origin`` that is a bare repository; returns (checkout, bare)."""
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HOME", str(tmp_path))  # no user's git configuration
    root, bare = tmp_path / "blvnb", tmp_path / "remote.git"
    (root / "notebooks").mkdir(parents=True)
    (root / "book").mkdir()
    (root / "_config.yml").write_text((ROOT / "_config.yml").read_text())
    (root / "_toc.yml").write_text((ROOT / "_toc.yml").read_text())
    (root / "notebooks" / "a.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4}))
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / ".gitignore").write_text("/_build/\n/book/generated/\n/book/reproduction.md\n")
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the book's sources")
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(root, "remote", "add", "origin", str(bare))
    return root, bare


def fake_build(root: Path, pages: dict[str, str]) -> None:
    """``_build/html`` holding ``pages`` (and nothing else), the chapters it shows, and the build stamp."""
    html = root / "_build" / "html"
    if html.exists():
        import shutil

        shutil.rmtree(html)
    for rel, text in pages.items():
        (html / rel).parent.mkdir(parents=True, exist_ok=True)
        (html / rel).write_text(text)
    gen = root / "book" / "generated"
    gen.mkdir(parents=True, exist_ok=True)
    (gen / "a.ipynb").write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "executed"}]}))
    (root / "book" / "reproduction.md").write_text("# Reproduction status\n")
    publish.write_stamp(root)


def tree(bare: Path, branch: str = "gh-pages") -> list[str]:
    return sorted(git(bare, "ls-tree", "-r", "--name-only", branch).split())


PAGES = {"index.html": '<meta http-equiv="Refresh" content="0; url=book/intro.html" />',
         "book/intro.html": "<h1>first</h1>", "book/reproduction.html": "<h1>status</h1>", "old.html": "gone next"}


def test_publish_pushes_the_build_to_gh_pages_and_a_second_replaces_it(checkout, monkeypatch, capsys):
    root, bare = checkout
    fake_build(root, PAGES)
    message = publish.publish(root, echo=lambda s: None)
    assert tree(bare) == sorted([*PAGES, ".nojekyll"])
    assert git(bare, "show", "gh-pages:book/intro.html") == "<h1>first</h1>"
    head = git(root, "rev-parse", "HEAD").strip()
    assert head[:12] in message and git(bare, "log", "-1", "--format=%s", "gh-pages").strip() == message
    assert git(bare, "branch", "--format=%(refname:short)").split() == ["gh-pages"]

    # a later build, published through the command line from the checkout: the branch holds it alone
    second = {k: v for k, v in PAGES.items() if k != "old.html"} | {"book/intro.html": "<h1>second</h1>",
                                                                      "new.html": "added"}
    fake_build(root, second)
    monkeypatch.chdir(root)
    assert main(["publish"]) == 0
    assert tree(bare) == sorted([*second, ".nojekyll"])
    assert git(bare, "show", "gh-pages:book/intro.html") == "<h1>second</h1>"
    assert "gh-pages of origin" in capsys.readouterr().out


def _refused(root: Path, bare: Path, *needles: str) -> str:
    with pytest.raises(BlvnbError) as err:
        publish.publish(root, echo=lambda s: None)
    text = str(err.value)
    for n in needles:
        assert n in text, text
    assert "gh-pages" not in git(bare, "branch"), "a refused publish pushed something"
    return text


def test_publish_refuses_a_missing_build(checkout):
    root, bare = checkout
    _refused(root, bare, "no built book", "_build/html", "make book")
    (root / "_build" / "html").mkdir(parents=True)
    (root / "_build" / "html" / "index.html").write_text("built by hand")
    _refused(root, bare, "no build stamp", "blvnb-build.json")  # a jupyter-book build not made by blvnb


def test_publish_refuses_a_build_older_than_what_it_shows(checkout):
    root, bare = checkout
    fake_build(root, PAGES)
    (root / "notebooks" / "a.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4, "edited": True}))
    git(root, "commit", "-q", "-am", "a notebook edited after the build")
    (root / "records" / "gpu" / "runs").mkdir(parents=True)
    (root / "records" / "gpu" / "runs" / "k.json").write_text("{}")
    (root / "book" / "generated" / "a.ipynb").unlink()
    text = _refused(root, bare, "older than what it shows", "changed: notebooks/a.ipynb",
                    "new: records/gpu/runs/k.json", "gone: book/generated/a.ipynb")
    # the untracked record also makes the tree dirty now, but the build itself was clean: not reported
    assert "dirty" not in text


def test_publish_refuses_a_build_from_a_dirty_tree(checkout):
    root, bare = checkout
    (root / "book" / "intro.md").write_text("# Intro, not committed\n")
    (root / "notes.txt").write_text("untracked, not ignored")
    fake_build(root, PAGES)
    _refused(root, bare, "dirty tree", "book/intro.md", "notes.txt")
    git(root, "commit", "-q", "-am", "committed after the build")  # the build is still the dirty one
    _refused(root, bare, "dirty tree", "book/intro.md")
    fake_build(root, PAGES)  # notes.txt is still untracked
    _refused(root, bare, "notes.txt")
    (root / "notes.txt").unlink()
    fake_build(root, PAGES)
    publish.publish(root, echo=lambda s: None)
    assert "index.html" in tree(bare)


def test_publish_refuses_outside_git_and_without_the_remote(checkout, tmp_path):
    root, bare = checkout
    fake_build(root, PAGES)
    with pytest.raises(BlvnbError, match="no git remote 'upstream'"):
        publish.publish(root, remote="upstream", echo=lambda s: None)
    plain = tmp_path / "copy"
    plain.mkdir()
    (plain / "_build" / "html").mkdir(parents=True)
    (plain / "_build" / "html" / "index.html").write_text("x")
    publish.write_stamp(plain)
    with pytest.raises(BlvnbError, match="outside a git checkout"):
        publish.check_build(plain)


def test_build_config_resolves_the_repository_for_the_buttons(checkout):
    import yaml

    root, _ = checkout
    mine = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert mine["html"]["use_repository_button"] and mine["html"]["use_issues_button"]
    assert mine["sphinx"]["config"]["html_theme_options"]["use_download_button"] is True
    assert mine["sphinx"]["recursive_update"] is True  # else the theme options replace Jupyter Book's own
    # origin is a local bare repository: no GitHub URL, so no buttons (Jupyter Book refuses them without one)
    cfg = yaml.safe_load(reproduce.build_config(root).read_text())
    assert cfg["repository"]["url"] == "" and not cfg["html"]["use_repository_button"]
    assert not cfg["html"]["use_issues_button"] and reproduce.launch_links("a", root) == []
    for origin in ("https://github.com/someone/fork.git", "git@github.com:someone/fork.git"):
        git(root, "remote", "set-url", "origin", origin)
        cfg = yaml.safe_load(reproduce.build_config(root).read_text())
        assert cfg["repository"]["url"] == "https://github.com/someone/fork", origin
        assert cfg["html"]["use_repository_button"] and cfg["html"]["use_issues_button"]
        assert cfg["sphinx"] == mine["sphinx"] and cfg["title"] == mine["title"]
        assert dict(reproduce.launch_links("a", root))["Colab"].endswith("github/someone/fork/blob/main/notebooks/a.ipynb")
    # a URL in _config.yml wins over the remote
    (root / "_config.yml").write_text((root / "_config.yml").read_text().replace('url: ""', "url: https://github.com/o/r"))
    assert yaml.safe_load(reproduce.build_config(root).read_text())["repository"]["url"] == "https://github.com/o/r"


def test_make_publish_calls_blvnb_publish():
    make = (ROOT / "Makefile").read_text()
    assert "publish: $(STAMP)\n\t$(PY) -m blvnb publish --remote $(REMOTE)" in make
    assert "ghp-import" in (ROOT / "pyproject.toml").read_text()
    assert os.path.basename(publish.stamp_path(ROOT).parent) == "_build"  # beside _build/html, not published


def _readme_commands() -> set[str]:
    """Every command line of the README's ``bash`` blocks, without its comment."""
    text = (ROOT / "README.md").read_text()
    out = set()
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            cmd = re.sub(r"\s+#.*$", "", line).strip()
            if cmd and not cmd.startswith("#"):
                out.add(cmd)
    return out


def test_the_workflow_runs_the_readme_commands_and_deploys_the_build():
    import yaml

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as true
    assert on["push"]["branches"] == ["main"]
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    steps = build["steps"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    commands = [ln.strip() for s in steps if "run" in s for ln in s["run"].splitlines() if ln.strip()]
    # the README's set-up and quick build, nothing else: every command is one the README gives
    assert commands == ["make book"], commands
    readme = _readme_commands()
    assert set(commands) <= readme, (set(commands) - readme)
    assert "make publish" in readme and "make test" in readme
    # set-up: the checkout (with records/) and a Python the README asks for (>= 3.10)
    assert uses[:2] == ["actions/checkout", "actions/setup-python"]
    py = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))["with"]["python-version"]
    assert tuple(int(x) for x in str(py).split(".")) >= (3, 10)
    # toycity and the quick results cached: the folders the library uses by default, restored across versions
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    paths = cache["with"]["path"].split()
    assert "~/.cache/blvnb" in paths and "results" in paths and cache["with"].get("restore-keys")
    from blvnb.experiments import store

    assert os.environ.get("BLVNB_RESULTS") or store.results_root() == Path("results").resolve()
    assert '".cache" / "blvnb"' in (ROOT / "blvnb" / "data" / "toycity.py").read_text()
    make_book = next(i for i, s in enumerate(steps) if "run" in s)
    assert uses.index("actions/cache") < make_book  # restored before the build
    # the built pages, deployed with GitHub's Pages actions
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html" and make_book < uses.index("actions/upload-pages-artifact")
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    # the gpu and paper profiles are rendered from records/, never computed here
    text = (ROOT / ".github" / "workflows" / "book.yml").read_text()
    for never in ("--profile gpu", "--profile paper", "PROFILE=", "runs execute", "--force", "BLVNB_RECORDS"):
        assert never not in " ".join(commands) and never not in text.split("jobs:")[1], never


def test_a_folder_inside_another_checkout_has_no_repository(checkout):
    root, _ = checkout
    git(root, "remote", "set-url", "origin", "https://github.com/someone/fork.git")
    inner = root / "copy"
    (inner / "notebooks").mkdir(parents=True)
    (inner / "_config.yml").write_text((ROOT / "_config.yml").read_text())
    assert reproduce.repository_url(root) == "https://github.com/someone/fork"
    assert reproduce.repository_url(inner) == "" and publish.git_state(inner) is None
