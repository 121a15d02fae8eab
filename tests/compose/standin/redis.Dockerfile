# Stand-in for the redis image docker-compose.yml names, where it cannot be pulled (tests/compose/run.sh):
# Debian's redis-server, run as the official image runs it: as user redis in /data, and with
# protected mode off when no config file is given (other containers reach it on the compose network).
# version: redis-server --version | cut -d' ' -f1-3
FROM textgen-standin/debian:bookworm
LABEL textgen.standin="Debian redis-server"
ENV LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && install -d -o redis -g redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
