# Modelsmith: modelsmithd (the service) and modelsmith (the CLI, also `modelsmith run` for
# batch Jobs) on Debian 12. Both stages take their packages from scripts/install-deps.sh, so the
# image and `make serve` cannot disagree about dependencies.

FROM debian:12 AS build
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN bash /src/scripts/install-deps.sh --build-only && rm -rf /var/lib/apt/lists/*
COPY . /src
WORKDIR /src
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && cmake --build /build -j "$(nproc)" --target modelsmithd modelsmith \
 && cmake --install /build --prefix /opt/modelsmith --strip

FROM debian:12-slim AS runtime
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --runtime-only && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh \
 && useradd --system --uid 10001 --home-dir /var/lib/modelsmith --create-home modelsmith
COPY --from=build /opt/modelsmith/bin/modelsmithd /opt/modelsmith/bin/modelsmith /usr/local/bin/
USER 10001
WORKDIR /var/lib/modelsmith
ENV MODELSMITH_LISTEN=0.0.0.0:50051 \
    MODELSMITH_METRICS_LISTEN=0.0.0.0:9464 \
    MODELSMITH_DATA_DIR=/var/lib/modelsmith
EXPOSE 50051 9464 8081
VOLUME ["/var/lib/modelsmith"]
ENTRYPOINT ["modelsmithd"]
