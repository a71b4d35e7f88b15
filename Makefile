# The README's two commands: `make book` and `make test` (and `make publish`, its "Publishing" section). Both create .venv on first use and reuse it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick
JOBS   ?= auto
STAMP  := $(VENV)/.blvnb-installed

.PHONY: book test publish venv clean-book clean

venv: $(STAMP)

# Reinstall when the dependency list changes. torch/torchvision are pinned in pyproject.toml; pip finds
# them in the configured index (on GPU servers pre-install the CUDA build of the same version first).
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing blvnb[book,dev] (first run: a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -e ".[book,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

book: $(STAMP)
	$(PY) -m blvnb reproduce --profile $(PROFILE) --jobs $(JOBS)

test: $(STAMP)
	$(PY) -m pytest

# The built book to the gh-pages branch of REMOTE (ghp-import -n -p -f): refused when _build/html is missing,
# older than the notebooks or records it shows, or built from a dirty tree. Run `make book` first.
REMOTE ?= origin
publish: $(STAMP)
	$(PY) -m blvnb publish --remote $(REMOTE)

clean-book:
	rm -rf _build book/generated

clean: clean-book
	rm -rf $(VENV) results
