# rocketops container image: build with the locked dependency set, run as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY commands ./commands
RUN cargo build --locked --release --bin rocketops

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/rocketops /usr/local/bin/rocketops
COPY commands /etc/rocketops/commands
USER nonroot:nonroot
WORKDIR /var/lib/rocketops
ENV ROCKETOPS_CONFIG=/etc/rocketops/rocketops.toml \
    ROCKETOPS_STORE_PATH=/var/lib/rocketops/data
VOLUME ["/var/lib/rocketops"]
ENTRYPOINT ["/usr/local/bin/rocketops"]
CMD ["run"]
