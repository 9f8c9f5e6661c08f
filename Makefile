# acs-gateway: every target bootstraps what it needs, from a fresh clone on Debian 12 (as root,
# or with sudo), interactively or in CI (CI=true, no stdin).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CONFIG ?= conf/gateway.toml

# Debian packages the tests and `make run` need, as COMMAND:PACKAGE; a package is installed
# only when its command is missing.
# espeak-ng speaks the REST text play sources (and the PESQ bench's speech).
# coturn brings turnutils_uclient/_stunclient/_peer (the TURN interop tests) and turnserver (the
# TURN bench's reference); its own daemon stays off (Debian's /etc/default/coturn leaves
# TURNSERVER_ENABLED unset; where systemd starts it anyway, on 3478, nothing here uses it: the
# tests and the bench run their own servers on free ports). iptables: NAT topologies (netns).
DEB_NEEDS := sipp:sip-tester baresip:baresip-core espeak-ng:espeak-ng \
	turnutils_uclient:coturn iptables:iptables ip:iproute2 sysctl:procps
# What `make bench` needs beside those.
DEB_BENCH :=
# Shared libraries loaded at run time (opuslib finds libopus with ctypes), as SONAME:PACKAGE.
DEB_LIBS := libopus.so.0:libopus0

# Root runs apt-get itself; anyone else goes through sudo when there is one.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo || true)

.PHONY: all deps venv lint test run bench clean

all: test

deps:
	@missing=""; \
	for need in $(DEB_NEEDS) $(EXTRA_NEEDS); do \
	  command -v "$${need%%:*}" >/dev/null 2>&1 || missing="$$missing $${need#*:}"; \
	done; \
	for need in $(DEB_LIBS); do \
	  /sbin/ldconfig -p | grep -qF "$${need%%:*} " || missing="$$missing $${need#*:}"; \
	done; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  $(SUDO) apt-get update; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(VENV)/bin/pip || $(PYTHON) -m venv --clear $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --progress-bar off -q -e '.[test,bench]'
	@touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: deps venv lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

run: deps venv
	$(VENV)/bin/acs-gateway run -c $(CONFIG)

bench: EXTRA_NEEDS = $(DEB_BENCH)
bench: deps venv
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache bench/out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
