# The docker-compose replay of the whole system (docs/e2e.md).
#
#   make images     static binaries (CGO_ENABLED=0) and FROM-scratch images; nothing is pulled
#   make e2e        images, then the e2e driver: system up, scenarios, logs, teardown
#   make e2e-up     images, then bring the system up and leave it running
#   make e2e-down   remove the system (containers, network, volumes)
#
# E2E_RUN selects scenarios (go test -run), e.g. make e2e E2E_RUN='S1|S5'.

GO      ?= go
DOCKER  ?= docker
COMPOSE ?= $(shell $(DOCKER) compose version >/dev/null 2>&1 && echo "$(DOCKER) compose" || echo docker-compose)

E2E_BIN     := e2e/bin
E2E_PROJECT := msgmesh-e2e
E2E_TIMEOUT ?= 20m
E2E_RUN     ?= .
IMAGES      := msgmesh ctrlplane natsd kafkad rmq-testbroker demoapp
COMMANDS    := msgmesh ctrlplane meshctl natsd kafkad rmq-testbroker demoapp

.PHONY: binaries images e2e e2e-up e2e-down e2e-logs

binaries:
	@mkdir -p $(E2E_BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(E2E_BIN)/ $(addprefix ./cmd/,$(COMMANDS))

# Each image gets a build context of its own binaries only (the legacy
# builder sends the whole context).
images: binaries
	@set -e; for img in $(IMAGES); do \
	  ctx=$(E2E_BIN)/ctx/$$img; rm -rf $$ctx; mkdir -p $$ctx; \
	  ln -f $(E2E_BIN)/$$img $$ctx/; \
	  if [ $$img = ctrlplane ]; then ln -f $(E2E_BIN)/meshctl $$ctx/; fi; \
	  echo "docker build msgmesh-e2e/$$img:e2e"; \
	  out=$$($(DOCKER) build -q -f e2e/docker/$$img.Dockerfile -t msgmesh-e2e/$$img:e2e $$ctx 2>&1) || { echo "$$out"; exit 1; }; \
	done
	@echo "docker build msgmesh-e2e/msgmesh:v2 (the hot-upgrade target)"
	@out=$$($(DOCKER) build -q --build-arg VERSION=v2 -f e2e/docker/msgmesh.Dockerfile -t msgmesh-e2e/msgmesh:v2 $(E2E_BIN)/ctx/msgmesh 2>&1) || { echo "$$out"; exit 1; }
	@$(DOCKER) image prune -f --filter label=msgmesh.e2e=1 >/dev/null # earlier builds' untagged images

# The driver tears the system down itself; if it dies (a panic, the go test
# timeout), the logs are saved and the system removed here.
e2e: images
	@rc=0; CGO_ENABLED=0 $(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v -run '$(E2E_RUN)' ./e2e/ || rc=$$?; \
	if [ $$rc -ne 0 ] && [ -n "$$($(DOCKER) ps -aq --filter label=com.docker.compose.project=$(E2E_PROJECT))" ]; then \
	  $(MAKE) --no-print-directory e2e-logs e2e-down; \
	fi; exit $$rc

e2e-up: images
	E2E_KEEP=1 CGO_ENABLED=0 $(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v -run '^$$' ./e2e/

e2e-logs:
	@mkdir -p e2e/logs; for c in $$($(DOCKER) ps -aq --filter label=com.docker.compose.project=$(E2E_PROJECT)) \
	                             $$($(DOCKER) ps -aq --filter label=msgmesh.e2e.extra); do \
	  n=$$($(DOCKER) inspect -f '{{.Name}}' $$c | tr -d /); \
	  $(DOCKER) logs --timestamps $$c > e2e/logs/$$n.log 2>&1; echo "saved e2e/logs/$$n.log"; \
	done

e2e-down:
	-@ids=$$($(DOCKER) ps -aq --filter label=msgmesh.e2e.extra); [ -z "$$ids" ] || $(DOCKER) rm -f -v $$ids >/dev/null
	-$(COMPOSE) -p $(E2E_PROJECT) -f docker-compose.yml down -v -t 3 --remove-orphans
