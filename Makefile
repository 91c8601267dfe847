# The two set-up commands of the README:
#   make deploy   install drover and deploy configs/lab.yaml on the embedded lab
#   make test     install what the tests need and run every test
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# Debian packages the system tests use: a real sshd on 127.0.0.1 for paramiko, and QEMU
# with the tools that build and boot the tiny test image (kernel + busybox initramfs);
# PostgreSQL for the fleet server; Chromium (headless) to load the Prefect UI pages.
SYSTEM_PACKAGES := openssh-server openssh-client qemu-system-x86 qemu-utils busybox-static \
	cpio genisoimage lz4 libvirt-daemon-system libvirt-clients postgresql chromium

.PHONY: install deploy test system-deps soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

deploy: install
	$(VENV)/bin/drover deploy configs/lab.yaml

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$missing; \
	  else echo "the system tests need: $$missing (run make test as root, or install them)"; \
	  fi; \
	fi

test: install system-deps
	$(VENV)/bin/ruff check drover flows tasks tests bench
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/pytest

# The chaos soak: a thousand seeded fault schedules on the lab (CI runs a few dozen in make test).
soak: install
	$(VENV)/bin/python -m tests.chaos.soak --schedules $(or $(SCHEDULES),1000)
