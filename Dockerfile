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
# cgo stays on: the PKCS#11 key store (crypto/kms/pkcs11, through
# github.com/miekg/pkcs11) calls the PKCS#11 C API and dlopens the HSM
# vendor's module at run time, so a CGO_ENABLED=0 build does not compile.
# The binary links only glibc; the runtime stage is the matching Debian 12
# distroless base (glibc, CA certificates, no shell, no package manager).
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/strait ./cmd/strait

FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/strait /usr/local/bin/strait
# distroless "nonroot": UID/GID 65532. Strait writes nothing to disk, so the
# root filesystem can be mounted read-only. No HEALTHCHECK: orchestrators
# probe /healthz (liveness) and /readyz (readiness) on the admin listener.
USER 65532:65532
EXPOSE 9092 9644
ENTRYPOINT ["/usr/local/bin/strait"]
CMD ["run", "--config", "/etc/strait/config/strait.yaml"]
