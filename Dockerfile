# The gather binary alone on a distroless base: no shell, no package manager, user 65532.
#   docker build -t gather:dev .
# deploy/kubernetes runs it as gather:dev; docs/kubernetes.md says how to load it into kind.

FROM golang:1.26.8 AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static (no cgo), so that it runs on a base without libc.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION}" \
    -o /out/gather ./cmd/gather

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gather /gather
USER 65532:65532
# QueryService and admin (gather proxy); ShardService and admin (gather shard), as in
# deploy/kubernetes.
EXPOSE 7070 9090 7071 9091
ENTRYPOINT ["/gather"]
