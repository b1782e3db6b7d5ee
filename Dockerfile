# syntax=docker/dockerfile:1
#
# One image for the whole Switchboard workspace: the six services
# (gateway, identity, billing, crm-sync, support-router, ai-assist) and the
# `switchboard` operator CLI, all in /usr/local/bin. The image deliberately has
# no service-specific ENTRYPOINT: docker-compose.yml and the k8s manifests pick
# the binary with `command`, e.g. `command: ["billing"]` (or `["billing", "migrate"]`).
#
#   docker build -t switchboard:latest .

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /src

# Protobuf code generation uses the pure-Rust `protox`, so no protoc is needed here.
# SQLX_OFFLINE: a build never reaches a database; should compile-time-checked sqlx
# macros ever be used, their prepared `.sqlx/` data must be committed.
ENV SQLX_OFFLINE=true
COPY . .

# The cargo registry/git caches and target/ are BuildKit cache mounts: they survive
# between builds but are not part of any layer, so the binaries are copied out of
# target/ in the same RUN step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && for bin in gateway identity billing crm-sync support-router ai-assist switchboard; do \
        install -m 0755 "target/release/${bin}" "/out/${bin}"; \
    done

# ---------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Numeric UID/GID so Kubernetes can enforce `runAsNonRoot` without a runAsUser override.
RUN groupadd --system --gid 10001 switchboard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin switchboard

COPY --from=builder /out/ /usr/local/bin/

# In a container the services must listen on all interfaces (their built-in default is
# 127.0.0.1). Compose and the k8s manifests set these explicitly too.
ENV GATEWAY_HTTP_ADDR=0.0.0.0:8080 \
    GATEWAY_GRPC_ADDR=0.0.0.0:50050 \
    IDENTITY_HTTP_ADDR=0.0.0.0:8081 \
    IDENTITY_GRPC_ADDR=0.0.0.0:50051 \
    BILLING_HTTP_ADDR=0.0.0.0:8082 \
    BILLING_GRPC_ADDR=0.0.0.0:50052 \
    CRM_SYNC_HTTP_ADDR=0.0.0.0:8083 \
    CRM_SYNC_GRPC_ADDR=0.0.0.0:50053 \
    SUPPORT_ROUTER_HTTP_ADDR=0.0.0.0:8084 \
    SUPPORT_ROUTER_GRPC_ADDR=0.0.0.0:50054 \
    AI_ASSIST_HTTP_ADDR=0.0.0.0:8085 \
    AI_ASSIST_GRPC_ADDR=0.0.0.0:50055 \
    SWITCHBOARD_LOG_FORMAT=json

#      gateway      identity     billing      crm-sync     support-router ai-assist
EXPOSE 8080 50050   8081 50051   8082 50052   8083 50053   8084 50054     8085 50055

USER 10001:10001
WORKDIR /tmp

# Not tied to a service: running the image bare shows the operator CLI's help.
CMD ["switchboard", "--help"]
