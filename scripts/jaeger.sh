#!/usr/bin/env bash
# Runs a local Jaeger v2 all-in-one with in-memory storage, every port on 127.0.0.1:
#   query API         http://127.0.0.1:16686   (e.g. /api/traces?service=gather-proxy); no UI:
#                     a build from module source serves Jaeger's placeholder page instead, so
#                     look at traces with `gather trace TRACE_ID` (or the container image, README)
#   OTLP receivers    127.0.0.1:4317 (gRPC), 127.0.0.1:4318 (HTTP)
# Jaeger v2 cannot be `go install`ed (its go.mod has a replace directive), so the binary is built
# once from its module source, fetched through the Go module proxy, and cached.
set -euo pipefail

module_version=v1.76.0 # the Go module version of Jaeger v2.13.0
cache="${XDG_CACHE_HOME:-$HOME/.cache}/gather"
bin="${JAEGER_BIN:-$cache/jaeger-$module_version}"

if [ ! -x "$bin" ]; then
  echo "jaeger: building Jaeger v2.13.0 from its module source (once, about 3-4 minutes)..." >&2
  dir=$(go mod download -json "github.com/jaegertracing/jaeger@$module_version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "jaeger: go mod download gave no module directory" >&2; exit 1; }
  mkdir -p "$(dirname "$bin")"
  (cd "$dir" && GOFLAGS=-mod=mod go build -o "$bin.tmp" ./cmd/jaeger)
  mv "$bin.tmp" "$bin"
  echo "jaeger: built $bin" >&2
fi

export JAEGER_LISTEN_HOST=127.0.0.1
exec "$bin" \
  --set=extensions.jaeger_query.http.endpoint=127.0.0.1:16686 \
  --set=extensions.jaeger_query.grpc.endpoint=127.0.0.1:16685 "$@"
