# Hilo: local stack and checks. The stack needs root (chroot, mounts).
SHELL := /bin/bash
VENV := .run/venv/bin

.PHONY: run stack down lint typecheck layers test faults clean bench lock

run:            ## whole stack, Hilo server included
	bash stack/up.sh

stack:          ## stack without the Hilo server (tests run their own)
	bash stack/up.sh --no-server

down:           ## stop everything stack/up.sh started
	bash stack/down.sh

lock:           ## refresh requirements*.lock to the newest versions pyproject.toml allows; written only if make test passes
	bash stack/lock.sh

lint:
	$(VENV)/ruff check .

typecheck:
	$(VENV)/mypy

layers:         ## the layer contract in pyproject.toml: no module imports a layer above its own
	$(VENV)/lint-imports

bench:          ## caller identification vs a bare lookup on 1M imported customers, screen-pop latency over real calls, routing decisions, inbound messaging, KPI reports over 1M interactions and wallboard latency -> BENCHMARKS.md (needs `make stack`)
	set -a && . .run/env && set +a && $(VENV)/python -m bench.identify $(BENCH_ARGS)
	set -a && . .run/env && set +a && $(VENV)/python -m bench.screenpop $(SCREENPOP_ARGS)
	set -a && . .run/env && set +a && $(VENV)/python -m bench.routing $(ROUTING_ARGS)
	set -a && . .run/env && set +a && $(VENV)/python -m bench.messaging $(MESSAGING_ARGS)
	set -a && . .run/env && set +a && $(VENV)/python -m bench.kpis $(or $(KPIS_ARGS),--full)

test: stack lint typecheck layers
	set -a && . .run/env && set +a && $(VENV)/pytest

faults: stack    ## the fault suite alone (stack tests marked `fault`; `make test` runs them too): per fault, calls and messages kept or lost, timeline events lost -> a table, .run/reports/faults.{json,html}
	set -a && . .run/env && set +a && $(VENV)/pytest -m fault tests/stack $(FAULTS_ARGS)

clean: down     ## stop, then delete .run (data, logs, venv, chroot)
	@if grep -qs " $(CURDIR)/.run/" /proc/mounts; then echo "error: mounts remain under .run/" >&2; exit 1; fi
	@pg=$$(readlink .run/pg 2>/dev/null || true); \
	  case "$$pg" in /var/lib/hilo/pg-*) rm -rf --one-file-system "$$pg" ;; esac
	rm -rf --one-file-system .run

.PHONY: images
images:         ## container images of docker-compose.yml, built with podman on a local Debian base, no registry (root; stack/images.sh)
	bash stack/images.sh
