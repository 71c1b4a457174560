# Container image with memstress-controller (the entrypoint) and
# memstress-worker, built from source on Debian bookworm.
#
# BASE_IMAGE defaults to the image that hack/base-image.sh builds from
# Debian's packages, for machines that cannot pull from a registry. Any
# bookworm image works, for example BASE_IMAGE=debian:bookworm-slim.
#
# `make image` builds with `--network host` because hack/docker.sh starts
# dockerd without a bridge, so apt-get in RUN steps reaches the mirror
# through the host's network.

ARG BASE_IMAGE=memstress/debian:bookworm

FROM ${BASE_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential pkg-config \
        libcurl4-openssl-dev libjson-c-dev libyaml-dev libmicrohttpd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -j"$(nproc)" all

FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libcurl4 libjson-c5 libyaml-0-2 libmicrohttpd12 ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
COPY --from=build /src/bin/memstress-controller /src/bin/memstress-worker /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/memstress-controller"]
