# syntax=docker/dockerfile:1
# The Hilo server image (docker-compose.yml: the hilo and asterisk-config services).
#
# BASE is a Debian bookworm image. stack/images.sh builds localhost/hilo-base:bookworm with debootstrap from
# the machine's own apt mirror (no container registry needed) and builds this image on it; with Docker and a
# registry, `--build-arg BASE=debian:bookworm-slim` works as well.
#
# The dependencies come from requirements.lock (exact versions, with hashes); the project itself is then
# installed from the whole build context (see .dockerignore) without dependencies, built with the locked
# setuptools: nothing unpinned is fetched, and no package is named here.
ARG BASE=localhost/hilo-base:bookworm
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv espeak-ng libespeak-ng1 sox \
 && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/hilo \
    PATH=/opt/hilo/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN python3 -m venv /opt/hilo
COPY requirements.lock /tmp/hilo/requirements.lock
# pip_cert: an optional build secret, a CA bundle for a TLS-inspecting proxy between the build and PyPI
# (stack/images.sh passes the host's). Without it pip uses its own.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && pip install --require-hashes -r /tmp/hilo/requirements.lock
COPY . /tmp/hilo/src
RUN pip install --no-deps --no-build-isolation /tmp/hilo/src \
 && rm -rf /tmp/hilo \
 && hilo --help >/dev/null
# Everything the server writes lives under /var/lib/hilo; the configuration (dialplans/) is the installed
# package's demo unless HILO_DIALPLANS_DIR names a mounted folder.
ENV HILO_HTTP_HOST=0.0.0.0 \
    HILO_TTS_CACHE_DIR=/var/lib/hilo/tts-cache \
    HILO_RECORDINGS_DIR=/var/lib/hilo/recordings \
    HILO_SPOOL_DIR=/var/lib/hilo/spool \
    HILO_SOUNDS_DIR=/var/lib/hilo/sounds/hilo
WORKDIR /var/lib/hilo
EXPOSE 8080
# PostgreSQL may still be starting (podman-compose does not wait for health checks): migrations are retried
# for up to a minute, then the server replaces the shell.
CMD ["sh", "-c", "for i in $(seq 30); do hilo db migrate && exec hilo serve; echo 'hilo db migrate failed: retrying in 2 s' >&2; sleep 2; done; exit 1"]
