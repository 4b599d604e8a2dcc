# Production image: a release build on Debian bookworm, run from a distroless base (glibc,
# no shell, no package manager, no curl) as a non-root user.
#
#   docker build -t gateway .
#   docker run --rm -p 8443:8443 --stop-timeout 40 \
#       -v "$PWD/examples/compose:/etc/gateway:ro" -e JWT_SECRET_KEY="$(openssl rand -base64 48)" \
#       gateway
#
# Configuration: the image reads /etc/gateway/gateway.yaml (mount it, with users.yaml and any
# key or certificate files, as a volume, a ConfigMap or a Secret); relative paths inside it
# resolve against /etc/gateway. Pass secrets through the environment (`secret:
# ${JWT_SECRET_KEY}`) or as files (`secret_file:`), never baked into the image.
#
# Inside a container the listeners must bind 0.0.0.0 (the reference gateway.yaml binds
# 127.0.0.1:8443, which a published port cannot reach); examples/compose/gateway.yaml is a
# container-ready configuration.
#
# Stopping: SIGTERM makes /readyz answer 503, closes the listeners and lets in-flight requests
# finish within server.shutdown_grace (30s by default). `docker stop` sends SIGKILL after 10s
# unless told otherwise, so give it more: `docker stop -t 40`, `docker run --stop-timeout 40`,
# or `stop_grace_period` in compose.
#
# Building needs only the manifests and the sources; .git and target/ are never copied.

FROM rust:1-bookworm AS build
WORKDIR /src
# Build dependencies first so source edits do not rebuild them: dummy targets stand in for
# every workspace member while the dependency graph compiles.
COPY Cargo.toml Cargo.lock ./
COPY upstream-example/Cargo.toml upstream-example/Cargo.toml
RUN mkdir -p src benches upstream-example/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > benches/request_path.rs \
 && echo 'fn main() {}' > upstream-example/src/main.rs && touch upstream-example/src/lib.rs \
 && cargo build --release --locked -p gateway \
 && rm -rf src benches upstream-example/src
# Only what the build needs (not `COPY . .`, which would also bring the host's target/ and
# .git into the build and overlay the host's artifacts on the cached ones).
COPY src src
COPY benches benches
COPY upstream-example upstream-example
# The dummy build's artifacts are newer than the copied sources: touch them so cargo rebuilds.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
# 65532 is distroless's `nonroot` user. Numeric on purpose: Kubernetes' runAsNonRoot can only
# verify a numeric USER (with a name it refuses to start the container).
USER 65532:65532
# 8443: the TLS listener of the example configurations (listeners[].address).
# 9901: the admin listener (plain HTTP: /metrics, /healthz, /readyz). Its default address is
#       127.0.0.1:9901; inside a container set `admin: {address: 0.0.0.0:9901}` so probes and
#       Prometheus from outside the container's network namespace can reach it (Kubernetes
#       probes connect to the pod IP, not to loopback). Do not publish it to the internet.
EXPOSE 8443 9901
# The HEALTHCHECK runs inside the container's network namespace, so 127.0.0.1 reaches the
# admin listener whether it binds 127.0.0.1:9901 or 0.0.0.0:9901. It uses the binary's own
# `healthcheck` command (exit 0 on a 2xx) because the image has no shell and no curl, hence
# the exec form. /readyz answers 503 while draining, so a stopping container reports
# unhealthy. If your configuration moves or disables the admin listener, override this
# (`docker run --health-cmd` / compose `healthcheck:`) or disable it (`--no-healthcheck`).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/gateway", "healthcheck", "--url", "http://127.0.0.1:9901/readyz"]
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["run", "--config", "/etc/gateway/gateway.yaml"]
