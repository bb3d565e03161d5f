# Strongroom: `make run` and `make test` do all set-up on a fresh Debian machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo

# Debian packages the build and the tests need:
#   softhsm2      the PKCS#11 token used in development and tests
#   opensc        pkcs11-tool, to look inside a token by hand
#   libssl-dev, pkg-config, build-essential   crates that link the system OpenSSL or build C
#   openssl, curl  make run's demo client certificate and scripts/try-flow.sh
APT_PACKAGES := softhsm2 opensc libssl-dev pkg-config build-essential openssl curl

DEV_HSM := $(CURDIR)/dev-hsm
DEV_LABEL := strongroom-dev

.PHONY: deps test lint run bench bench-load bench-soak bench-hsm clean-dev

## deps: install what is missing (apt-get as root; otherwise print the exact command)
deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "run: sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }

## test: every test, against real SoftHSM2 tokens made in temporary directories
test: deps lint
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi
	$(CARGO) test --workspace --doc

## lint: clippy with the workspace lints (no unwrap on input, no panics in library code)
lint: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

DEV_ENV := SOFTHSM2_CONF=$(DEV_HSM)/softhsm2.conf STRONGROOM_CONFIG=config/dev.toml

## run: the server on https://localhost:8443 (mTLS on 8444), with a development token and
## database under dev-hsm/ (git-ignored); Ctrl-C stops it
run: deps $(DEV_HSM)/softhsm2.conf
	$(CARGO) build --release -p strongroom-server
	$(DEV_ENV) target/release/strongroom keys ensure
	$(DEV_ENV) target/release/strongroom keys list
	@$(DEV_ENV) bash scripts/dev-seed.sh target/release/strongroom $(DEV_HSM)
	@echo
	@echo "Try:  curl -k https://localhost:8443/.well-known/openid-configuration"
	@echo "      scripts/try-flow.sh     (PAR, login as 'demo' in a browser, token, userinfo)"
	@echo "      $(DEV_ENV) target/release/strongroom keys rotate --purpose id_token" | tr -s '\t ' ' '
	@echo
	$(DEV_ENV) target/release/strongroom serve

$(DEV_HSM)/softhsm2.conf:
	bash softhsm-config/create-token.sh $(DEV_HSM) $(DEV_LABEL) >/dev/null
	@echo "created a development token '$(DEV_LABEL)' in $(DEV_HSM) (PINs in its so-pin and user-pin files)"

## bench-hsm: signatures per second on one SoftHSM2 token: single session, pool, raw threads, processes
bench-hsm: deps
	$(CARGO) bench -p strongroom-benches --bench hsm

## bench: token issuance under load: the release server on fresh SoftHSM2 tokens, driven over
## HTTPS by benches/load.rs, beside the raw HSM rate (STRONGROOM_LOAD_* variables: see that file)
bench: bench-load

bench-load: deps
	$(CARGO) build --release -p strongroom-server
	$(CARGO) bench -p strongroom-benches --bench load

## bench-soak: scenario 1 for 10 minutes (STRONGROOM_LOAD_SOAK_SECS); RSS after the first
## minute and at the end
bench-soak: deps
	$(CARGO) build --release -p strongroom-server
	$(CARGO) bench -p strongroom-benches --bench load -- --soak

## clean-dev: remove the development token
clean-dev:
	rm -rf $(DEV_HSM)
