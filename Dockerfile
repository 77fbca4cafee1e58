# syntax=docker/dockerfile:1
# Strait's container image: `docker build -t strait .` (optionally
# --build-arg VERSION=v1.2.3). charts/chart_test.go runs this file's
# `go build` line and its CMD against the real binary.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# A static binary (no cgo) on distroless/static: no libc, no shell, no
# package manager. The one thing it lacks is the PKCS#11 key store, which
# calls a vendor's C module (glibc) through cgo: for an HSM, build with
# CGO_ENABLED=1 and run on gcr.io/distroless/base-debian12:nonroot, whose
# glibc matches this Debian 12 builder (docs/operations.md). The other key
# stores (local, aws-kms, vault-transit) are pure Go.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/strait ./cmd/strait

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/strait /usr/local/bin/strait
# distroless "nonroot": UID/GID 65532. Strait writes nothing to disk, so the
# root filesystem can be mounted read-only. No HEALTHCHECK: orchestrators
# probe /healthz (liveness) and /readyz (readiness) on the admin listener.
USER 65532:65532
EXPOSE 9092 9644
ENTRYPOINT ["/usr/local/bin/strait"]
CMD ["run", "--config", "/etc/strait/config/strait.yaml"]
