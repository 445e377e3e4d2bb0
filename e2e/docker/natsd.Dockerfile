# NATS JetStream: nats-server embedded in cmd/natsd.
# Built by "make images" FROM scratch: nothing but the static binary
# (CGO_ENABLED=0 go build -trimpath), so no base image is pulled. The build
# context is e2e/bin/ctx/<image> (see the Makefile).
FROM scratch
ARG VERSION=e2e
LABEL msgmesh.e2e="1" org.opencontainers.image.title="natsd" org.opencontainers.image.version="$VERSION" org.opencontainers.image.source="https://github.com/msgmesh/msgmesh"
COPY natsd /natsd
ENTRYPOINT ["/natsd"]
