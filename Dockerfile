# The vledger image: one `vledger` command for every role (docker-compose.yml says which).
#
#   docker build -t vledger:0.1.0 .
#   docker run --rm vledger:0.1.0 --help
#
# No key, configuration or data is in the image: the cluster file is mounted at
# /etc/vledger/cluster.toml, the key directory at /keys (for a node or the gateway, read-only and
# only its own folder of `vledger keygen --cluster FILE --bundles /bundles`) and each node's
# store directory under /data. The process runs as the unprivileged user vledger
# (uid and gid 10001): on a host directory mounted at /keys, give that uid the files and
# keep the secrets 0600 (a node refuses a secret key that others can read).

# --- build: the wheel, from the package's sources only (.dockerignore lets nothing else in) ---
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- run ---
FROM python:3.11-slim
ARG UID=10001
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VLEDGER_CONFIG=/etc/vledger/cluster.toml
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && groupadd --system --gid "$UID" vledger \
    && useradd --system --uid "$UID" --gid vledger --home-dir /home/vledger --create-home \
       --shell /usr/sbin/nologin vledger \
    && install -d -o vledger -g vledger -m 0700 /keys /data /bundles
# An empty named volume mounted on /keys, /data or /bundles takes these owners and modes.
USER vledger:vledger
WORKDIR /home/vledger
ENTRYPOINT ["vledger"]
CMD ["--help"]
