# The raft-node image, built FROM scratch: no base image, so no registry is
# needed. `scripts/docker.sh build` stages the build context (see
# stage_rootfs there): rootfs/ holds raft-node and the bazar CLI (debug info
# stripped), exactly the shared libraries `ldd` lists for them plus the
# dynamic loader, /etc/passwd and /etc/group with the user bazar (10001), and
# /tmp; data/ is the empty data directory.
FROM scratch
COPY rootfs/ /
# A named volume mounted on /data starts as a copy of this directory, so it
# belongs to the bazar user too.
COPY --chown=10001:10001 data/ /data/
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7101
# SIGTERM makes raft-node stop gracefully; `docker stop` sends it.
STOPSIGNAL SIGTERM
# Liveness: the HTTP server answers /health. Whether the node is in a quorum
# is a question for `scripts/docker.sh status` (leaders), not for a restart.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/bazar", "--timeout", "2", "--frontend", "http://127.0.0.1:7101", "health"]
ENTRYPOINT ["/usr/local/bin/raft-node"]
# Compose adds --id, --advertise and --initial-cluster; tokens come from the
# BAZAR_ADMIN_TOKEN, BAZAR_CLUSTER_TOKEN and BAZAR_FRONTEND_TOKEN environment variables.
CMD ["--listen", "0.0.0.0:7101", "--data-dir", "/data"]
