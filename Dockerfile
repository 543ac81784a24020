# The harness image: slm-harness + Locust, run as a non-root user.
#
# Default: from a public Python base, installing from PyPI:
#   docker build -t slm-harness:0.1.0 .
# No network: from a local base image and a folder of wheels inside the build context
# (what scripts/build-images.sh does):
#   docker build --network none --build-arg BASE_IMAGE=slm-harness-base:TAG \
#     --build-arg WHEELS=.stack-build/wheels -t slm-harness:local .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# A folder of wheels inside the context; when it holds wheels, pip installs from it only.
ARG WHEELS=deploy/docker/no-wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY . /src
RUN python3 -m venv /opt/slm \
 && if ls /src/${WHEELS}/*.whl >/dev/null 2>&1; then \
      /opt/slm/bin/pip install -q --no-index --find-links "/src/${WHEELS}" /src; \
    else \
      /opt/slm/bin/pip install -q /src; \
    fi \
 && /opt/slm/bin/python -m pip uninstall -q -y pip setuptools wheel \
 && find /opt/slm/lib -depth -type d -path '*/site-packages/*' \( -name tests -o -name include \) \
      -exec rm -rf {} + \
 && mkdir -p /app/scenarios /app/locustfiles \
 && cp -r /src/scenarios/. /app/scenarios/ \
 && if [ -d /src/locustfiles ]; then cp -r /src/locustfiles/. /app/locustfiles/; fi

FROM ${BASE_IMAGE}
# The stream reader's C pass, built on the host (scripts/build-images.sh): the image has no
# compiler. Without it the reader runs in Python (harness/loadgen/native.py).
ARG NATIVE=deploy/docker/no-native
# no useradd in a minbase Debian tree: write the account directly
RUN echo 'slm:x:10001:10001:slm-harness:/app:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'slm:x:10001:' >> /etc/group \
 && mkdir -p /app /results /var/lib/slm-gpu && chown 10001:10001 /app /results /var/lib/slm-gpu
COPY --from=build /opt/slm /opt/slm
COPY --from=build --chown=10001:10001 /app /app
COPY ${NATIVE}/ /opt/slm/native/
ENV PATH=/opt/slm/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 SLM_NATIVE_CACHE=/opt/slm/native
USER 10001:10001
WORKDIR /app
EXPOSE 8000 8089
CMD ["slm-harness", "--help"]
