# syntax=docker/dockerfile:1
# The Portcullis container image.
#
#   docker build -t portcullis:0.1.0 .
#
# The builder runs scripts/build-release.sh, the same release build the test suite
# runs (tests/helm_chart.rs), so CI exercises this image's build step on every run.

FROM rust:1.89-slim-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds;
# the binary is copied out in the same step because the target cache is not part of
# the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bash scripts/build-release.sh \
 && install -D -m 0755 target/release/portcullis /out/portcullis

# The runtime holds the binary, the C runtime it links against, CA certificates (for
# rediss:// and other TLS peers), and the shipped model.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 portcullis \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin portcullis
COPY --from=builder /out/portcullis /usr/local/bin/portcullis
# The shipped portal schema and policies, the defaults when nothing is mounted.
COPY schema/ /usr/share/portcullis/schema/
COPY policies/ /usr/share/portcullis/policies/
# Both listeners on the container's address: in a pod the kubelet reaches the admin
# port (probes) over the pod IP.
ENV PORTCULLIS_LISTEN=0.0.0.0:8180 \
    PORTCULLIS_ADMIN_LISTEN=0.0.0.0:9180 \
    PORTCULLIS_SCHEMA=/usr/share/portcullis/schema/portal.cedarschema \
    PORTCULLIS_POLICIES=/usr/share/portcullis/policies
# A fixed numeric non-root user, so Kubernetes' runAsNonRoot can verify it without
# reading /etc/passwd; the chart's runAsUser is the same.
USER 65532:65532
EXPOSE 8180 9180
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
