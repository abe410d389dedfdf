# The agent's image for people who build with Docker (or Podman, Buildah): the same image
# `./dev image` writes as an OCI layout without a daemon (target/oci/fledge-agent): a static
# (musl) fledge-agent on an empty base, run as user 65532, with the OCI labels.
#
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t REGISTRY/fledge-agent:0.1.0 .
#
# This repository's CI does not run it (its machines have no container daemon); the layout that
# `./dev image` writes is the one the tests check. The filter's image is not built here: it is a
# Wasm image (`./dev image` writes target/oci/fledge-filter), not a container to run.

FROM rust:1.95.0-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked \
      -p fledge-agent --bin fledge-agent --target x86_64-unknown-linux-musl \
    && mkdir -p /out/etc \
    && install -m 0755 target/x86_64-unknown-linux-musl/release/fledge-agent /out/fledge-agent \
    && printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > /out/etc/passwd \
    && printf 'root:x:0:\nnonroot:x:65532:\n' > /out/etc/group

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="fledge-agent" \
      org.opencontainers.image.source="https://github.com/fledge-dev/fledge" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/fledge-agent"]
CMD ["kube"]
