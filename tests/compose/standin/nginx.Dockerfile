# Stand-in for the nginx image docker-compose.yml names, where it cannot be pulled (tests/compose/run.sh):
# Debian's nginx (1.22, with the gRPC proxy module), run as the official image runs it: in the
# foreground, logs to the container's output, configuration in /etc/nginx/nginx.conf.
# version: nginx -v 2>&1
FROM textgen-standin/debian:bookworm
LABEL textgen.standin="Debian nginx"
ENV LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx-core bash \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
