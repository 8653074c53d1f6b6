# One image for every role: `pinster-images operator | ingress | job ...`.
# Build: docker build -t pinster-images .            (add --build-arg EXTRAS=nudenet for NudeNet)
# CI cannot build images (no container engine); it installs the same wheel into a fresh
# virtual environment the way this file does and smoke-tests each role (tests/e2e/test_package.py).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY src ./src
COPY operator ./operator
COPY jobs ./jobs
COPY ingress ./ingress
COPY devcluster ./devcluster
# The CRD's one real file (crds/ only links to it); the wheel ships it.
COPY charts/pinster-images/files ./charts/pinster-images/files
RUN python -m build --wheel --outdir /dist

FROM python:${PYTHON_VERSION}-slim AS venv
ARG EXTRAS=""
COPY --from=build /dist /dist
RUN python -m venv /opt/pinster \
 && /opt/pinster/bin/pip install --no-cache-dir --upgrade pip \
 && wheel=$(ls /dist/*.whl) \
 && /opt/pinster/bin/pip install --no-cache-dir "${wheel}${EXTRAS:+[$EXTRAS]}"

FROM python:${PYTHON_VERSION}-slim
# No compilers or build tools here: only the interpreter and the installed venv.
COPY --from=venv /opt/pinster /opt/pinster
RUN useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin pinster
ENV PATH=/opt/pinster/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# Works with readOnlyRootFilesystem: everything writable goes to /tmp (an emptyDir in the chart).
USER 65532:65532
ENTRYPOINT ["pinster-images"]
CMD ["--help"]
