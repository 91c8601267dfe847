# The two set-up commands of the README:
#   make deploy   install drover and deploy configs/lab.yaml on the embedded lab
#   make test     install what the tests need and run every test
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install deploy test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

deploy: install
	$(VENV)/bin/drover deploy configs/lab.yaml

test: install
	$(VENV)/bin/ruff check drover flows tasks tests bench
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/pytest
