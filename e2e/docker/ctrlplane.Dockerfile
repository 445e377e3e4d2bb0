# The control plane (cmd/ctrlplane), with meshctl beside it for operators: docker exec <container> /meshctl ...
# Built by "make images" FROM scratch: nothing but the static binary
# (CGO_ENABLED=0 go build -trimpath), so no base image is pulled. The build
# context is e2e/bin/ctx/<image> (see the Makefile).
FROM scratch
ARG VERSION=e2e
LABEL msgmesh.e2e="1" org.opencontainers.image.title="ctrlplane" org.opencontainers.image.version="$VERSION" org.opencontainers.image.source="https://github.com/msgmesh/msgmesh"
COPY ctrlplane /ctrlplane
COPY meshctl /meshctl
ENTRYPOINT ["/ctrlplane"]
