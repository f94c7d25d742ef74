# pulsed: `make lab` runs the classic LVS lab, `make test` runs every test tier.
# Both work as root on a fresh Debian machine: they install what they need.

VENV       ?= .venv
PY         := $(VENV)/bin/python
PYTEST     := $(VENV)/bin/pytest
RUFF       := $(VENV)/bin/ruff
MYPY       := $(VENV)/bin/mypy
REPORTS    := .cache/reports
VM_OUT     := .cache/vm-out
MODE       ?= nat
# The lab needs the first line (the VM fallback, namespaces); the tests need all of them.
LAB_PKGS   := qemu-system-x86 busybox-static kmod ipvsadm iproute2 procps frr
TEST_PKGS  := $(LAB_PKGS) keepalived ldirectord prometheus wrk chromium tcpdump nftables \
              arping systemd dnsmasq-base
# The package, the image and the systemd tier (make deb, image, systemd). Where they
# cannot be installed, make test goes on and those tests skip, saying why.
PKG_PKGS   := debhelper lintian python3-venv ca-certificates man-db \
              podman buildah runc uidmap mmdebstrap systemd-container
PKG_STAMP  := .cache/apt-pkg.stamp
VM_OUT_SD  := .cache/vm-out-systemd
APT_STAMP  := .cache/apt.stamp
LAB_STAMP  := .cache/apt-lab.stamp
VENV_STAMP := $(VENV)/.installed

.PHONY: test deps lab-deps lint unit netns kernel deb image image-test systemd lab clean

test: deps lint unit netns kernel image-test systemd
	@echo "all test tiers ran: reports in $(REPORTS)/"

deps: $(APT_STAMP) $(VENV_STAMP)
	@scripts/install-kernel >/dev/null

lab-deps: $(LAB_STAMP) $(VENV_STAMP)

# Install whichever of the named Debian packages are missing.
define apt_install
	@mkdir -p .cache
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(NO_START) apt-get update -qq \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  status=$$?; $(ALLOW_START) exit $$status; \
	fi
	@touch $@
endef
# Packages such as keepalived and frr start their service on install: never in this
# machine's own network namespace (tests run them in namespaces they create). A
# policy-rc.d that says no for the time of the install, unless one is there already.
NO_START    := policy=/usr/sbin/policy-rc.d; made=; [ -e $$policy ] || \
               { printf '\#!/bin/sh\nexit 101\n' > $$policy && chmod +x $$policy && made=1; };
ALLOW_START := [ -z "$$made" ] || rm -f $$policy;

$(APT_STAMP): Makefile
	$(call apt_install,$(TEST_PKGS))

$(LAB_STAMP): Makefile
	$(call apt_install,$(LAB_PKGS))

$(PKG_STAMP): Makefile
	@mkdir -p .cache
	@missing=$$(for p in $(PKG_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
	    || echo "WARNING: cannot install $$missing: the package, image or systemd tests will skip"; \
	fi
	@touch $@

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing Python packages into $(VENV)"
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test,speed]'
	@touch $@

lint: $(VENV_STAMP)
	$(RUFF) check . scripts/lab
	$(RUFF) format --check . scripts/lab
	$(MYPY)

unit: $(VENV_STAMP)
	@mkdir -p $(REPORTS)
	$(PYTEST) -q tests/unit --junitxml=$(REPORTS)/unit.xml

netns: deps
	@mkdir -p $(REPORTS)
	$(PYTEST) -q tests/netns --junitxml=$(REPORTS)/netns.xml

# The kernel tier runs inside a VM booted from a stock Debian kernel that has IPVS.
kernel: deps
	@mkdir -p $(REPORTS) $(VM_OUT)
	@rm -f $(VM_OUT)/kernel.xml
	scripts/vm-run --out $(VM_OUT) -- $(PYTEST) -q -p no:cacheprovider tests/kernel --junitxml=$(VM_OUT)/kernel.xml
	@cp $(VM_OUT)/kernel.xml $(REPORTS)/kernel.xml

# The Debian package: ./pulsed_VERSION_amd64.deb, checked by lintian (docs/packaging.md).
deb: $(PKG_STAMP)
	scripts/build-deb

# The container image, localhost/pulsed:VERSION (podman, Docker format).
image: $(PKG_STAMP)
	scripts/build-image

# Its smoke test: check-config and the daemon (memory backend) in the image, /healthz.
image-test: $(PKG_STAMP) $(VENV_STAMP)
	@mkdir -p $(REPORTS)
	@command -v podman >/dev/null && scripts/build-image >/dev/null || echo "WARNING: no image built"
	$(PYTEST) -q -rs tests/image --junitxml=$(REPORTS)/image.xml

# The unit under a real systemd: the .deb installed in a Debian system booted by
# systemd-nspawn inside the IPVS VM (tests/systemd).
systemd: deps deb
	@mkdir -p $(REPORTS) $(VM_OUT_SD)
	@rm -f $(VM_OUT_SD)/systemd.xml
	scripts/systemd-tree
	scripts/vm-run --out $(VM_OUT_SD) -- env PULSED_SYSTEMD_LOGS=$(CURDIR)/$(VM_OUT_SD) $(PYTEST) -q -rs -p no:cacheprovider tests/systemd --junitxml=$(VM_OUT_SD)/systemd.xml
	@cp $(VM_OUT_SD)/systemd.xml $(REPORTS)/systemd.xml

lab: lab-deps
	@scripts/lab --mode $(MODE)

clean:
	rm -rf .cache/reports .cache/vm-out $(VM_OUT_SD) .cache/deb pulsed_*.deb
