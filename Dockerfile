# One image for every role: `pinster-images operator | ingress | job ...`.
#   docker build -t pinster-images .                 (BuildKit; --build-arg EXTRAS=nudenet for NudeNet)
# The devcluster builds it with BuildKit from a Debian bookworm base made locally
# (BASE_IMAGE, see docs/devcluster.md) and gives pip the machine's CA bundle as the
# secret `ca-bundle`; neither is needed where python:3.11-slim and PyPI are reachable.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
# The dependencies alone first: their layer survives changes to the sources.
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt
RUN --mount=type=secret,id=ca-bundle \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip install --upgrade pip build
COPY src ./src
COPY operator ./operator
COPY jobs ./jobs
COPY ingress ./ingress
COPY devcluster ./devcluster
# The CRD's one real file (crds/ only links to it); the wheel ships it.
COPY charts/pinster-images/files ./charts/pinster-images/files
RUN --mount=type=secret,id=ca-bundle \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && /opt/build/bin/python -m build --wheel --outdir /dist

FROM ${BASE_IMAGE} AS venv
ARG EXTRAS=""
COPY --from=build /src/requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca-bundle \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && python3 -m venv /opt/pinster \
 && /opt/pinster/bin/pip install --upgrade pip \
 && /opt/pinster/bin/pip install -r /tmp/requirements.txt
COPY --from=build /dist /dist
RUN --mount=type=secret,id=ca-bundle \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && wheel=$(ls /dist/*.whl) \
 && /opt/pinster/bin/pip install "${wheel}${EXTRAS:+[$EXTRAS]}" \
 && /opt/pinster/bin/pip uninstall --yes pip

FROM ${BASE_IMAGE}
# No compilers, build tools or pip here: only the interpreter and the installed venv.
COPY --from=venv /opt/pinster /opt/pinster
RUN groupadd --gid 65532 pinster \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin pinster
ENV PATH=/opt/pinster/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# Works with readOnlyRootFilesystem: everything writable goes to /tmp (an emptyDir in the chart).
USER 65532:65532
ENTRYPOINT ["pinster-images"]
CMD ["--help"]
