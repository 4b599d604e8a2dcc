# Production image: a static-ish release build on Debian, run from a distroless base as a
# non-root user. Reads /etc/gateway/gateway.yaml (mount it, with users.yaml and keys, as a
# volume, ConfigMap or Secret); pass secrets such as JWT_SECRET_KEY through the environment.
#
#   docker build -t gateway .
#   docker run -p 8443:8443 -v $PWD:/etc/gateway:ro -e JWT_SECRET_KEY=... gateway

FROM rust:1-bookworm AS build
WORKDIR /src
# Build dependencies first so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY upstream-example/Cargo.toml upstream-example/Cargo.toml
RUN mkdir -p src benches upstream-example/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > benches/request_path.rs \
 && echo 'fn main() {}' > upstream-example/src/main.rs && touch upstream-example/src/lib.rs \
 && cargo build --release --locked -p gateway \
 && rm -rf src benches upstream-example/src
COPY . .
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
USER nonroot:nonroot
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["run", "--config", "/etc/gateway/gateway.yaml"]
