# Stand-in for python:3.11-slim-bookworm where it cannot be pulled (tests/compose/run.sh): Debian's
# python3 (3.11) in a venv at /usr/local, so `python` and `pip` are where the official image has them.
# version: python --version && pip --version | cut -d' ' -f1-2
FROM textgen-standin/debian:bookworm
LABEL textgen.standin="Debian python3 in a venv at /usr/local"
ENV LANG=C.UTF-8 PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
# The host's CA certificates (*.crt beside this file, if any): pip reaches its registry through them
# (the project's Dockerfiles set PIP_CERT to the system bundle).
COPY . /tmp/standin/
RUN cp /tmp/standin/*.crt /usr/local/share/ca-certificates/ 2>/dev/null; rm -rf /tmp/standin \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates netbase tzdata \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && update-ca-certificates \
 && python3 -m venv /usr/local
CMD ["python3"]
